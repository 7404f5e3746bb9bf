"""Corpus importers: raw corpora on disk -> Lhotse cut manifests (DESIGN section 3).

Each importer takes (CORPUS_DIR, OUT_DIR), writes OUT_DIR/cuts.jsonl.gz (+ cuts_<part>.jsonl.gz
for corpora with parts) and OUT_DIR/rejects.jsonl.gz, and returns an ImportReport whose rows
always equal cuts + rejected. A new importer is a scan yielding `rows.Row`s handed to
`rows.import_rows` (or a lhotse recipe reconciled by `recipe.assemble`), plus its entry in PREPARERS.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from osum_data.corpora.aishell import prepare_aishell
from osum_data.corpora.audioset import prepare_audioset
from osum_data.corpora.commonvoice import prepare_commonvoice
from osum_data.corpora.cremad import prepare_cremad
from osum_data.corpora.esc50 import prepare_esc50
from osum_data.corpora.esd import prepare_esd
from osum_data.corpora.iemocap import prepare_iemocap
from osum_data.corpora.kespeech import prepare_kespeech
from osum_data.corpora.librispeech import prepare_librispeech
from osum_data.corpora.longform import prepare_longform
from osum_data.corpora.meld import prepare_meld
from osum_data.corpora.noise import prepare_musan, prepare_rirs_noises
from osum_data.corpora.nonspeech7k import prepare_nonspeech7k
from osum_data.corpora.ravdess import prepare_ravdess
from osum_data.corpora.report import ImportReport
from osum_data.corpora.tsv import prepare_tsv
from osum_data.corpora.vocalsound import prepare_vocalsound
from osum_data.corpora.voxceleb import prepare_voxceleb
from osum_data.errors import UsageError

__all__ = ["PREPARERS", "ImportReport", "prepare"]

PREPARERS: dict[str, Callable[[Path, Path], ImportReport]] = {
    "tsv": prepare_tsv,
    "librispeech": prepare_librispeech,
    "aishell": prepare_aishell,
    "commonvoice": prepare_commonvoice,
    "kespeech": prepare_kespeech,
    "voxceleb": prepare_voxceleb,
    # emotion
    "iemocap": prepare_iemocap,
    "meld": prepare_meld,
    "esd": prepare_esd,
    "cremad": prepare_cremad,
    "ravdess": prepare_ravdess,
    # vocal events
    "esc50": prepare_esc50,
    "vocalsound": prepare_vocalsound,
    "nonspeech7k": prepare_nonspeech7k,
    "audioset": prepare_audioset,
    # noise / reverberation sources for augmentation (cuts without supervisions, custom.kind)
    "musan": prepare_musan,
    "rirs_noises": prepare_rirs_noises,
    # long raw recordings (one cut per file, no supervision) for the long-form pipeline
    "longform": prepare_longform,
}


def prepare(name: str, corpus_dir: str | Path, out_dir: str | Path) -> ImportReport:
    """Run the importer called `name` (a key of PREPARERS)."""
    try:
        preparer = PREPARERS[name]
    except KeyError:
        raise UsageError(f"unknown corpus {name!r}; known: {', '.join(PREPARERS)}") from None
    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    if corpus_dir.is_file():
        raise UsageError(f"{corpus_dir} is a file, not a corpus directory")
    if not corpus_dir.is_dir():
        raise FileNotFoundError(f"corpus directory {corpus_dir} does not exist")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir} is a file; give a directory for the manifests")
    refuse_other_output(out_dir)
    return preparer(corpus_dir, out_dir)


# Files only a pipeline run, export or mix writes: an import never does.
NOT_AN_IMPORT = ("summary.json", "run.json", "pipeline.yaml")


class PrepareOutputError(UsageError):
    """OUT_DIR holds the results of something other than an import (exit 2, nothing written)."""


def refuse_other_output(out_dir: Path) -> None:
    """An import writes cuts.jsonl.gz and rejects.jsonl.gz; in a run, export or mix folder it would
    replace that run's results (with `summary.json` still describing the old run), as `run`, `export`
    and `mix` refuse to do to each other. A folder of an earlier import is fine to overwrite."""
    found = [name for name in NOT_AN_IMPORT if (out_dir / name).exists()]
    if found:
        raise PrepareOutputError(
            f"{out_dir} holds the results of a pipeline run, export or mix ({', '.join(found)}); "
            "prepare would replace its cuts.jsonl.gz and rejects.jsonl.gz: give another OUT_DIR"
        )
