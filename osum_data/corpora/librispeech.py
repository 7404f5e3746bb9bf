"""LibriSpeech: lhotse's recipe plus speaker gender from SPEAKERS.TXT.

lhotse's prepare_librispeech sets language "English" and the speaker id but no gender; it skips a
transcript line whose .flac is missing with a log warning, never sees a .flac that has no
transcript line, and crashes on a transcript line without text. We scan the part directories
ourselves to report the first two as rejects and to fail early, with the file and line, on the
third.
"""

from __future__ import annotations

import os
from pathlib import Path

from lhotse.recipes import prepare_librispeech as lhotse_prepare_librispeech
from lhotse.recipes.librispeech import LIBRISPEECH, MINI_LIBRISPEECH
from lhotse.utils import fastcopy

from osum_data.corpora.labels import SupervisionLabels
from osum_data.corpora.recipe import Expected, assemble, run_recipe
from osum_data.corpora.rejects import NO_TRANSCRIPT
from osum_data.corpora.report import ImportReport
from osum_data.corpora.text import read_text
from osum_data.errors import UsageError
from osum_data.rejects import Reject

CORPUS = "librispeech"
PARTS = LIBRISPEECH + MINI_LIBRISPEECH


def prepare_librispeech(corpus_dir: Path, out_dir: Path, num_jobs: int = 4) -> ImportReport:
    """Import every LibriSpeech part found under CORPUS_DIR (or CORPUS_DIR/LibriSpeech)."""
    root = locate(Path(os.path.abspath(corpus_dir)))  # lhotse stores paths as given
    parts = [p for p in PARTS if (root / p).is_dir()]
    speakers = read_speakers(root / "SPEAKERS.TXT")
    expected = [entry for part in parts for entry in scan_part(root, part)]
    manifests = run_recipe(
        "prepare_librispeech",
        lhotse_prepare_librispeech,
        root,
        dataset_parts=parts,
        output_dir=None,
        num_jobs=num_jobs,
    )

    def relabel(sup, part):
        labels = SupervisionLabels(CORPUS)
        code = speakers.get(sup.speaker or "")
        try:
            labels.set_gender(code)
        except Reject as err:
            raise Reject(err.code, f"{err.detail} for speaker {sup.speaker} in SPEAKERS.TXT") from None
        if sup.alignment:  # word alignments found next to the transcripts (*.alignment.txt)
            labels.sources["alignment"] = "corpus"
        return labels.apply(fastcopy(sup, language="en"))

    ordered = {part: manifests[part] for part in parts if part in manifests}
    return assemble(CORPUS, Path(out_dir), expected, ordered, relabel, expected_labels=("gender",))


def locate(corpus_dir: Path) -> Path:
    """The directory holding the part folders: CORPUS_DIR itself or CORPUS_DIR/LibriSpeech."""
    for root in (corpus_dir, corpus_dir / "LibriSpeech"):
        if any((root / p).is_dir() for p in PARTS):
            return root
    raise FileNotFoundError(f"no LibriSpeech part ({', '.join(PARTS)}) under {corpus_dir}")


def read_speakers(path: Path) -> dict[str, str]:
    """Speaker id -> gender code from lines like `14   | F | train-clean-360  | 25.03 | Name`.

    Names may themselves contain '|' (speaker 60 is "|CBW|Simon"), so only the first fields count.
    A missing file gives no genders: the cuts are kept and counted as lacking gender in the report.
    """
    if not path.is_file():
        return {}
    speakers = {}
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        fields = [f.strip() for f in line.split("|", 4)]
        if len(fields) < 2 or not fields[0]:
            raise UsageError(f"{path}:{lineno}: expected 'ID | SEX | SUBSET | MINUTES | NAME', got {line!r}")
        speakers[fields[0]] = fields[1]
    return speakers


def scan_part(root: Path, part: str) -> list[Expected]:
    """Utterances the part's transcripts promise, plus .flac files that no transcript mentions."""
    entries = []
    listed = set()
    for trans in sorted((root / part).rglob("*.trans.txt")):
        lines = read_text(trans).splitlines()
        for lineno, line in enumerate(lines, start=1):
            fields = line.split(maxsplit=1)
            if len(fields) < 2:
                raise UsageError(
                    f"{trans}:{lineno}: {line!r} is not '<utterance id> <text>'; "
                    "lhotse's prepare_librispeech cannot parse it"
                )
            uid = fields[0]
            listed.add(uid)
            entries.append(
                Expected(uid, part, trans.parent / f"{uid}.flac", f"{trans.relative_to(root)}:{lineno}")
            )
    for flac in sorted((root / part).rglob("*.flac")):
        if flac.stem not in listed:
            problem = Reject(NO_TRANSCRIPT, f"{flac.relative_to(root)} has no line in any *.trans.txt")
            entries.append(Expected(flac.stem, part, flac, str(flac.relative_to(root)), problem))
    return entries
