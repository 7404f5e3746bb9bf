"""`diarize`: speaker turns of long recordings by a pyannote.audio (4.x) speaker-diarisation
pipeline loaded from a local folder; each turn becomes a derived cut with one speaker.

The folder is what `Pipeline.from_pretrained` reads locally: `config.yaml` plus the checkpoints it
names (`segmentation/`, `embedding/`, `plda/` for pyannote/speaker-diarization-community-1). It is
never fetched at run time; a missing folder stops the run before any work with what to download
and where. The waveform is handed to pyannote already loaded (16 kHz mono), which is much faster
than letting it decode the file, and read in chunks of `chunk_s` seconds so that memory stays bounded on
very long recordings (speaker labels are then per chunk). Turns where another speaker talks too are
dropped (`overlap: drop`, more than `max_overlap` seconds) or kept with `custom.segment.overlap_s`
(`mark`). Speaker ids are `<recording id>:<pyannote label>` (with the chunk when there are several),
so two recordings' SPEAKER_00 never merge.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from lhotse.cut import Cut
from pydantic import Field

from osum_data.label.audio_windows import window_audio
from osum_data.label.longform.segments import Segment, resolve_overlaps, run_segmenter
from osum_data.run.stage import StageContext, StageResult, register_stage

SAMPLE_RATE = 16000


def missing_pipeline_message(path: Path) -> str:
    return (
        f"diarize: no pyannote pipeline at {path} (config.yaml missing). On a machine with internet, accept "
        "the terms of pyannote/speaker-diarization-community-1 on the Hugging Face hub and run "
        f"`hf download pyannote/speaker-diarization-community-1 --local-dir {path}` (config.yaml, "
        "segmentation/, embedding/, plda/), then copy that folder here"
    )


def _check(params: dict) -> None:
    path = Path(params["pipeline"]).expanduser()
    if not (path / "config.yaml").is_file() and not (path.is_file() and path.suffix in (".yaml", ".yml")):
        raise ValueError(missing_pipeline_message(path))


def annotation_turns(annotation, offset: float, speaker_prefix: str) -> list[Segment]:
    """pyannote Annotation -> turns in seconds (shifted by `offset`), speakers prefixed."""
    return [
        Segment(offset + float(seg.start), offset + float(seg.end), f"{speaker_prefix}{label}")
        for seg, _, label in annotation.itertracks(yield_label=True)
    ]


def chunk_bounds(n_samples: int, chunk_s: float) -> list[tuple[int, int]]:
    """[start, end) sample ranges of consecutive chunks of `chunk_s` seconds (the last may be short;
    a last piece under a fifth of a chunk joins the one before)."""
    size = int(chunk_s * SAMPLE_RATE)
    bounds = [(s, min(n_samples, s + size)) for s in range(0, n_samples, size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < size / 5:
        last = bounds.pop()
        bounds[-1] = (bounds[-1][0], last[1])
    return bounds


@register_stage("diarize", version=1, num_gpus=1, check=_check)
class Diarize:
    """Speaker turns of long cuts (see the module docstring)."""

    def __init__(
        self,
        pipeline: str,
        device: Literal["auto", "cpu", "cuda"] = "auto",
        overlap: Literal["drop", "mark"] = "drop",
        max_overlap: Annotated[float, Field(ge=0)] = 0.0,
        min_duration: Annotated[float, Field(ge=0)] = 0.5,
        chunk_s: Annotated[float, Field(gt=0)] = 1800.0,
        num_speakers: Annotated[int, Field(ge=1)] | None = None,
        min_speakers: Annotated[int, Field(ge=1)] | None = None,
        max_speakers: Annotated[int, Field(ge=1)] | None = None,
    ):
        import torch
        from pyannote.audio import Pipeline

        from osum_data.label.align.base import resolve_device

        path = Path(pipeline).expanduser()
        if not (path / "config.yaml").is_file() and not path.is_file():
            raise RuntimeError(missing_pipeline_message(path))
        self.pipeline = Pipeline.from_pretrained(path)
        self.pipeline.to(torch.device(resolve_device(device)))
        self.overlap, self.max_overlap, self.min_duration, self.chunk_s = (
            overlap,
            max_overlap,
            min_duration,
            chunk_s,
        )
        self.speakers = {
            k: v
            for k, v in (
                ("num_speakers", num_speakers),
                ("min_speakers", min_speakers),
                ("max_speakers", max_speakers),
            )
            if v is not None
        }

    def turns(self, cut: Cut, recording_id: str) -> list[Segment]:
        """Speaker turns of a 16 kHz cut, read and diarised one chunk at a time."""
        import torch

        bounds = chunk_bounds(round(cut.duration * SAMPLE_RATE), self.chunk_s)
        out: list[Segment] = []
        for k, (a, b) in enumerate(bounds):
            audio = window_audio(cut, a / SAMPLE_RATE, min(cut.duration, b / SAMPLE_RATE))
            audio = audio.mean(axis=0) if audio.ndim == 2 else audio
            wave = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None]
            result = self.pipeline({"waveform": wave, "sample_rate": SAMPLE_RATE}, **self.speakers)
            annotation = getattr(result, "speaker_diarization", result)
            prefix = f"{recording_id}:" + (f"c{k}:" if len(bounds) > 1 else "")
            out += annotation_turns(annotation, a / SAMPLE_RATE, prefix)
        return sorted(out, key=lambda t: (t.start, t.end))

    def segments(self, cut: Cut) -> tuple[list[Segment], dict]:
        src = cut.resample(SAMPLE_RATE) if cut.sampling_rate != SAMPLE_RATE else cut
        turns = self.turns(src, cut.recording_id)
        kept, dropped = resolve_overlaps(turns, self.overlap, self.max_overlap)
        return kept, {"turns": len(turns), "overlap_dropped": dropped}

    def __call__(self, cuts: list[Cut], ctx: StageContext) -> StageResult:
        return run_segmenter(cuts, self.segments, "diarize", self.min_duration)
