"""Corpus importers: raw corpora on disk -> Lhotse cut manifests (DESIGN section 3).

Each importer takes (CORPUS_DIR, OUT_DIR), writes OUT_DIR/cuts.jsonl.gz (+ cuts_<part>.jsonl.gz
for corpora with parts) and OUT_DIR/rejects.jsonl.gz, and returns an ImportReport whose rows
always equal cuts + rejected.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from osum_data.corpora.aishell import prepare_aishell
from osum_data.corpora.commonvoice import prepare_commonvoice
from osum_data.corpora.librispeech import prepare_librispeech
from osum_data.corpora.report import ImportReport
from osum_data.corpora.tsv import prepare_tsv

__all__ = ["PREPARERS", "ImportReport", "prepare"]

PREPARERS: dict[str, Callable[[Path, Path], ImportReport]] = {
    "tsv": prepare_tsv,
    "librispeech": prepare_librispeech,
    "aishell": prepare_aishell,
    "commonvoice": prepare_commonvoice,
}


def prepare(name: str, corpus_dir: str | Path, out_dir: str | Path) -> ImportReport:
    """Run the importer called `name` (a key of PREPARERS)."""
    try:
        preparer = PREPARERS[name]
    except KeyError:
        raise KeyError(f"unknown corpus {name!r}; known: {', '.join(PREPARERS)}") from None
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        raise FileNotFoundError(f"corpus directory {corpus_dir} does not exist")
    return preparer(corpus_dir, Path(out_dir))
