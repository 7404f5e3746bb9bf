"""`segment_vad`: split long recordings into speech segments with silero-vad (weights ship in the
`silero-vad` package; nothing is downloaded).

Silero marks speech regions (32 ms windows). Regions closer than `split_pause` join into one
segment; a segment longer than `max_duration` is split at its longest pause, again and again, so
cuts fall between words; a single region still too long was already split by silero at its best
pause inside (hard cut only when the speaker never pauses). Each segment is padded by `padding` on
both sides (at most half the pause to its neighbour, never past the recording) and segments
shorter than `min_duration` are left out and counted.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from lhotse.cut import Cut
from pydantic import Field

from osum_data.label.longform.segments import Segment, run_segmenter
from osum_data.run.stage import StageContext, StageResult, register_stage

SAMPLE_RATE = 16000
Seconds = Annotated[float, Field(ge=0)]


def _check(params: dict) -> None:
    if params["min_duration"] > params["max_duration"]:
        raise ValueError(
            f"min_duration {params['min_duration']} is above max_duration {params['max_duration']}"
        )


def split_at_pauses(
    regions: list[tuple[float, float]], max_duration: float
) -> list[list[tuple[float, float]]]:
    """Split a run of speech regions into groups no longer than `max_duration`, each split at the
    longest pause of the group being split."""
    if len(regions) < 2 or regions[-1][1] - regions[0][0] <= max_duration:
        return [regions]
    gaps = [regions[i + 1][0] - regions[i][1] for i in range(len(regions) - 1)]
    k = int(np.argmax(gaps)) + 1
    return split_at_pauses(regions[:k], max_duration) + split_at_pauses(regions[k:], max_duration)


def plan_segments(
    regions: list[tuple[float, float]],
    duration: float,
    split_pause: float,
    max_duration: float,
    padding: float,
) -> list[Segment]:
    """Speech regions (seconds) -> padded segments: join across pauses shorter than `split_pause`,
    split groups longer than `max_duration` at their longest pauses, pad."""
    runs: list[list[tuple[float, float]]] = []
    for r in regions:
        if runs and r[0] - runs[-1][-1][1] < split_pause:
            runs[-1].append(r)
        else:
            runs.append([r])
    groups = [g for run in runs for g in split_at_pauses(run, max_duration)]
    spans = [(g[0][0], g[-1][1]) for g in groups]
    out = []
    for i, (s, e) in enumerate(spans):
        before = (s - spans[i - 1][1]) / 2 if i > 0 else s
        after = (spans[i + 1][0] - e) / 2 if i + 1 < len(spans) else duration - e
        out.append(Segment(max(0.0, s - min(padding, before)), min(duration, e + min(padding, after))))
    return out


@register_stage("segment_vad", version=1, check=_check)
class SileroVAD:
    """Speech segments of long cuts by silero-vad (see the module docstring for the rules)."""

    def __init__(
        self,
        threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5,
        min_duration: Seconds = 1.0,
        max_duration: Annotated[float, Field(gt=0)] = 20.0,
        padding: Seconds = 0.1,
        split_pause: Seconds = 0.5,
        min_speech: Seconds = 0.25,
        min_pause: Seconds = 0.1,
    ):
        import torch
        from silero_vad import load_silero_vad

        torch.set_num_threads(1)
        self.model = load_silero_vad()
        self.threshold, self.min_duration, self.max_duration = threshold, min_duration, max_duration
        self.padding, self.split_pause = padding, split_pause
        self.min_speech, self.min_pause = min_speech, min_pause

    def speech_regions(self, audio: np.ndarray) -> list[tuple[float, float]]:
        """Speech regions in seconds, unpadded, none longer than max_duration."""
        import torch
        from silero_vad import get_speech_timestamps

        stamps = get_speech_timestamps(
            torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)),
            self.model,
            threshold=self.threshold,
            sampling_rate=SAMPLE_RATE,
            min_speech_duration_ms=int(self.min_speech * 1000),
            min_silence_duration_ms=int(self.min_pause * 1000),
            max_speech_duration_s=self.max_duration,
            speech_pad_ms=0,
        )
        return [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in stamps]

    def segments(self, cut: Cut) -> tuple[list[Segment], dict]:
        src = cut.resample(SAMPLE_RATE) if cut.sampling_rate != SAMPLE_RATE else cut
        audio = np.asarray(src.load_audio(), dtype=np.float32)
        audio = audio.mean(axis=0) if audio.ndim == 2 else audio
        regions = self.speech_regions(audio)
        segs = plan_segments(
            regions, len(audio) / SAMPLE_RATE, self.split_pause, self.max_duration, self.padding
        )
        return segs, {"speech_s": round(sum(e - s for s, e in regions), 3), "input_s": round(cut.duration, 3)}

    def __call__(self, cuts: list[Cut], ctx: StageContext) -> StageResult:
        return run_segmenter(cuts, self.segments, "vad", self.min_duration)
