"""`align_import`: word alignments made by other tools (CTM, Praat TextGrid), checked like ours.

`path` is one CTM or TextGrid file, or a folder of them (`<id>.TextGrid`, `*.ctm`). Entries are
found by cut id (times relative to the cut) or else by recording id (times in the recording,
shifted to the cut). The imported words must agree with the reference transcript after spoken-form
normalisation (`max_token_error_rate`, default exact); silence and filler labels are skipped. The
files are read once per worker, and once in the driver before any work, so a malformed line stops
the run at once with its file and line number.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from lhotse.cut import Cut
from pydantic import Field

from osum_data.label.align.base import AlignerStage
from osum_data.label.align.words import RefWord, Span, spans_from_timed_words
from osum_data.label.timing_files import TimedWord, TimingFileError, read_ctm, read_textgrid
from osum_data.run.stage import Reject, register_stage

Format = Literal["auto", "ctm", "textgrid"]
SKIP_LABELS = ("", "sil", "sp", "spn", "<eps>", "<sil>", "<s>", "</s>", "#")


def _format_of(path: Path, fmt: Format) -> str:
    if fmt != "auto":
        return fmt
    if path.suffix.lower() == ".ctm":
        return "ctm"
    if path.suffix.lower() == ".textgrid":
        return "textgrid"
    raise TimingFileError(f"{path}: cannot tell the format from the suffix (.ctm, .TextGrid); set format")


@cache
def load_word_timings(path: str, fmt: Format = "auto", tier: str = "words") -> dict[str, list[TimedWord]]:
    """id -> timed words, from one file or a folder of files (cached per process)."""
    root = Path(path).expanduser()
    if not root.exists():
        raise TimingFileError(f"{root}: no such file or folder")
    files = (
        sorted(p for p in root.rglob("*") if p.suffix.lower() in (".ctm", ".textgrid"))
        if root.is_dir()
        else [root]
    )
    out: dict[str, list[TimedWord]] = {}
    for f in files:
        if _format_of(f, fmt) == "ctm":
            for key, words in read_ctm(f).items():
                out.setdefault(key, []).extend(words)
            continue
        tiers = read_textgrid(f)
        match = {k.lower(): k for k in tiers}.get(tier.lower())
        if match is None:
            raise TimingFileError(f"{f}: no interval tier {tier!r} (tiers: {', '.join(tiers) or 'none'})")
        out[f.stem] = tiers[match]
    return out


def _check(params: dict) -> None:
    try:
        load_word_timings(params["path"], params["format"], params["tier"])
    except TimingFileError as e:
        raise ValueError(str(e)) from None


@register_stage("align_import", version=1, check=_check)
class ImportedAligner(AlignerStage):
    """Word spans from CTM / TextGrid files, checked against the transcript."""

    needs_audio = False

    def __init__(
        self,
        path: str,
        format: Format = "auto",
        tier: str = "words",
        skip_labels: list[str] = SKIP_LABELS,
        max_token_error_rate: Annotated[float, Field(ge=0, le=1)] = 0.0,
        allow_zero_length: bool = False,
    ):
        super().__init__(allow_zero_length)
        self.timings = load_word_timings(path, format, tier)
        self.skip = {s.lower() for s in skip_labels}
        self.max_error = max_token_error_rate
        self.source = f"import:{Path(path).name}"

    def align(self, audio: np.ndarray, words: list[RefWord], language: str, cut: Cut) -> list[Span | None]:
        offset = max(0.0, cut.supervisions[0].start)
        if cut.id in self.timings:
            entries, shift = self.timings[cut.id], -offset
        elif cut.recording_id in self.timings:
            entries, shift = self.timings[cut.recording_id], -(cut.start + offset)
        else:
            raise Reject(
                "no_alignment", f"cut {cut.id}: no entry for it or its recording in the imported files"
            )
        sup_duration = cut.supervisions[0].duration or cut.duration
        timed = [
            (w.word, w.start + shift, w.end + shift)
            for w in entries
            if w.word.lower() not in self.skip and w.end + shift > 0 and w.start + shift < sup_duration
        ]
        return spans_from_timed_words(cut.id, words, timed, language, self.max_error, what="imported")
