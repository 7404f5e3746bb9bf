"""Segments of long recordings as derived cuts, and `segments_import` (RTTM / STM from other tools).

A long recording enters a pipeline as one cut; a segmentation stage (VAD, diarisation, imported
RTTM/STM) returns one derived cut per segment: the source cut truncated to the segment (lhotse
keeps it lazy, nothing is written), one supervision over it (speaker, transcript where known),
`custom.source_cut_id` naming the long cut, `custom.segment` saying where it came from and
`custom.lineage` what it is made of (the long cut's keys and, for a recording joined from others, the
parts it overlaps). A long cut that yields no segment is rejected with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

from lhotse import SupervisionSegment
from lhotse.cut import Cut
from pydantic import Field

from osum_data.label.timing_files import TimingFileError, Turn, read_rttm, read_stm
from osum_data.run.stage import Reject, StageContext, StageResult, register_stage


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    speaker: str | None = None
    text: str | None = None
    overlap_s: float = 0.0  # seconds of it where another speaker talks too


def segment_cut(
    cut: Cut, seg: Segment, source: str, language: str | None = None, extra: dict | None = None
) -> Cut:
    """The derived cut of one segment of `cut` (times in seconds from the cut's start)."""
    start = max(0.0, seg.start)
    end = min(cut.duration, seg.end)
    new_id = f"{cut.id}_{round(start * 1000):08d}-{round(end * 1000):08d}"
    out = cut.truncate(offset=start, duration=end - start, keep_excessive_supervisions=False)
    out.id = new_id
    old = cut.supervisions[0] if cut.supervisions else None
    out.supervisions = [
        SupervisionSegment(
            id=new_id,
            recording_id=cut.recording_id,
            start=0.0,
            duration=round(end - start, 6),
            channel=out.channel,
            text=seg.text,
            language=language or (old.language if old else None),
            speaker=seg.speaker or (old.speaker if old else None),
            gender=old.gender if old and not seg.speaker else None,
        )
    ]
    info = {"start": round(start, 3), "end": round(end, 3), "source": source, **(extra or {})}
    if seg.overlap_s > 0:
        info["overlap_s"] = round(seg.overlap_s, 3)
    out.custom = {
        **{k: v for k, v in (cut.custom or {}).items() if k != "joined_from"},
        "source_cut_id": cut.id,
        "segment": info,
        "lineage": segment_lineage(cut, start, end),
    }
    return out


def segment_lineage(cut: Cut, start: float, end: float) -> list[str]:
    """The long cut's lineage, plus the source keys of the parts of it the segment overlaps when the
    long recording was joined from other recordings (`custom.joined_from`: start, end, lineage)."""
    from osum_data.mix.lineage import lineage_record

    keys = set(lineage_record(cut))
    a, b = cut.start + start, cut.start + end  # pieces are timed in the recording
    for piece in (cut.custom or {}).get("joined_from") or []:
        if isinstance(piece, dict) and piece.get("start", 0.0) < b and piece.get("end", 0.0) > a:
            keys.update(k for k in piece.get("lineage") or [] if isinstance(k, str))
    return sorted(keys)


def overlap_seconds(turns: list[Segment]) -> list[float]:
    """For each turn, the seconds during which a turn of another speaker runs too."""
    out = []
    for i, t in enumerate(turns):
        total = 0.0
        for j, o in enumerate(turns):
            if i != j and o.speaker != t.speaker:
                total += max(0.0, min(t.end, o.end) - max(t.start, o.start))
        out.append(min(total, t.end - t.start))
    return out


def resolve_overlaps(
    turns: list[Segment], policy: Literal["drop", "mark"], max_overlap: float
) -> tuple[list[Segment], int]:
    """Speaker turns with overlap handled: 'drop' leaves out turns overlapped by another speaker for
    more than `max_overlap` seconds, 'mark' keeps them with `overlap_s` set. (turns, dropped)."""
    kept, dropped = [], 0
    for t, ov in zip(turns, overlap_seconds(turns), strict=True):
        if ov > max_overlap and policy == "drop":
            dropped += 1
            continue
        kept.append(Segment(t.start, t.end, t.speaker, t.text, ov))
    return kept, dropped


def run_segmenter(cuts: list[Cut], segment_fn, source: str, min_duration: float) -> StageResult:
    """Apply `segment_fn(cut) -> (segments, counters)` to each long cut; derived cuts shorter than
    `min_duration` are left out (counted), a cut left with none is rejected."""
    from osum_data.run.stage import add_counters, rejecting

    result = StageResult()
    for cut in cuts:
        with rejecting(result, cut):
            segments, counters = segment_fn(cut)
            short = [s for s in segments if s.end - s.start < min_duration]
            segments = [s for s in segments if s.end - s.start >= min_duration]
            if not segments:
                raise Reject("no_segments", f"cut {cut.id}: no segment of at least {min_duration} s found")
            result.kept += [segment_cut(cut, s, source) for s in segments]
            add_counters(result.counters, {**counters, "segments": len(segments), "too_short": len(short)})
    return result


@cache
def load_turns(path: str, fmt: Literal["auto", "rttm", "stm"] = "auto") -> dict[str, list[Turn]]:
    """file id -> turns, from one RTTM/STM file or a folder of them (cached per process)."""
    root = Path(path).expanduser()
    if not root.exists():
        raise TimingFileError(f"{root}: no such file or folder")
    files = (
        sorted(p for p in root.rglob("*") if p.suffix.lower() in (".rttm", ".stm"))
        if root.is_dir()
        else [root]
    )
    out: dict[str, list[Turn]] = {}
    for f in files:
        kind = fmt if fmt != "auto" else f.suffix.lower().lstrip(".")
        if kind not in ("rttm", "stm"):
            raise TimingFileError(f"{f}: cannot tell the format from the suffix (.rttm, .stm); set format")
        for key, turns in (read_rttm(f) if kind == "rttm" else read_stm(f)).items():
            out.setdefault(key, []).extend(turns)
    return out


def _check_import(params: dict) -> None:
    try:
        load_turns(params["path"], params["format"])
    except TimingFileError as e:
        raise ValueError(str(e)) from None


def _keys(cut: Cut) -> list[str]:
    keys = [cut.id, cut.recording_id]
    rec = getattr(cut, "recording", None)
    if rec is not None and rec.sources and rec.sources[0].type == "file":
        keys.append(Path(rec.sources[0].source).stem)
    return keys


@register_stage("segments_import", version=1, check=_check_import)
class SegmentsImport:
    """Segments of long cuts from RTTM (speaker turns) or STM (timed transcripts) files made by
    other tools. Entries are found by cut id, recording id or the audio file's stem, with times in
    the recording. Overlapping speakers: `overlap: drop` (default) or `mark`."""

    def __init__(
        self,
        path: str,
        format: Literal["auto", "rttm", "stm"] = "auto",
        overlap: Literal["drop", "mark"] = "drop",
        max_overlap: Annotated[float, Field(ge=0)] = 0.0,
        min_duration: Annotated[float, Field(ge=0)] = 0.0,
    ):
        self.turns = load_turns(path, format)
        self.overlap, self.max_overlap, self.min_duration = overlap, max_overlap, min_duration

    def segments(self, cut: Cut) -> tuple[list[Segment], dict]:
        key = next((k for k in _keys(cut) if k in self.turns), None)
        if key is None:
            raise Reject("no_segments", f"cut {cut.id}: no entry for it in the imported segment files")
        turns = [
            Segment(t.start - cut.start, t.end - cut.start, t.speaker, t.text)
            for t in self.turns[key]
            if t.end > cut.start and t.start < cut.end
        ]
        turns, dropped = resolve_overlaps(turns, self.overlap, self.max_overlap)
        return turns, {"overlap_dropped": dropped}

    def __call__(self, cuts: list[Cut], ctx: StageContext) -> StageResult:
        return run_segmenter(cuts, self.segments, "import", self.min_duration)
