"""`segment_vad`: split long recordings into speech segments with silero-vad (weights ship in the
`silero-vad` package; nothing is downloaded).

Silero marks speech regions (32 ms windows). Regions closer than `split_pause` join into one
segment; a segment longer than `max_duration` is split at its longest pause, again and again, so
cuts fall between words; a single region still too long was already split by silero at its best
pause inside (hard cut only when the speaker never pauses). Each segment is padded by `padding` on
both sides (at most half the pause to its neighbour, never past the recording) and segments
shorter than `min_duration` are left out and counted.

Hours-long recordings are read and searched in windows of `window` seconds, so a worker never
holds more than one window of audio (a 3 h 44.1 kHz stereo podcast is 3.8 GB as float32). Speech
regions that end well before a window's end are final; the next window starts right after the last
of them, so no region is cut at a window edge.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from lhotse.cut import Cut
from pydantic import Field

from osum_data.label.audio_windows import WINDOW_S, window_audio
from osum_data.label.longform.segments import Segment, run_segmenter
from osum_data.run.stage import StageContext, StageResult, register_stage

SAMPLE_RATE = 16000
Seconds = Annotated[float, Field(ge=0)]


def _guard(min_pause: float) -> float:
    """Seconds before a window's end inside which a speech region may not be final yet (it could
    go on, or merge with speech after a short pause, in the next window)."""
    return max(5.0, 2 * min_pause)


def _check(params: dict) -> None:
    if params["min_duration"] > params["max_duration"]:
        raise ValueError(
            f"min_duration {params['min_duration']} is above max_duration {params['max_duration']}"
        )
    # A window must hold a whole region (at most max_duration) clear of its guard, or no region in
    # it could ever be final.
    least = params["max_duration"] + 2 * _guard(params["min_pause"])
    if params["window"] < least:
        raise ValueError(
            f"window {params['window']} is too short: give at least {least} s "
            "(max_duration plus twice the larger of 5 s and 2 x min_pause)"
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
        window: Annotated[float, Field(gt=0)] = WINDOW_S,
    ):
        import torch
        from silero_vad import load_silero_vad

        torch.set_num_threads(1)
        self.model = load_silero_vad()
        self.threshold, self.min_duration, self.max_duration = threshold, min_duration, max_duration
        self.padding, self.split_pause = padding, split_pause
        self.min_speech, self.min_pause, self.window = min_speech, min_pause, window

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

    def windowed_regions(self, cut: Cut) -> tuple[list[tuple[float, float]], int]:
        """Speech regions of the whole cut (seconds from its start), searched window by window;
        and the number of windows read."""
        src = cut.resample(SAMPLE_RATE) if cut.sampling_rate != SAMPLE_RATE else cut
        guard = _guard(self.min_pause)
        regions: list[tuple[float, float]] = []
        start, windows = 0.0, 0
        while start < cut.duration - 1e-6:
            end = min(cut.duration, start + self.window)
            audio = window_audio(src, start, end)
            audio = audio.mean(axis=0) if audio.ndim == 2 else audio
            found = [(start + s, start + e) for s, e in self.speech_regions(audio)]
            windows += 1
            if end >= cut.duration - 1e-6:
                regions += found
                break
            final = [r for r in found if r[1] <= end - guard]
            regions += final
            # Resume after the last final region (in its pause). A window holds at least one final
            # region (window >= max_duration + guards); the guard fallback only bounds the loop.
            start = final[-1][1] if final else end - guard
        return regions, windows

    def segments(self, cut: Cut) -> tuple[list[Segment], dict]:
        regions, windows = self.windowed_regions(cut)
        segs = plan_segments(regions, cut.duration, self.split_pause, self.max_duration, self.padding)
        return segs, {
            "speech_s": round(sum(e - s for s, e in regions), 3),
            "input_s": round(cut.duration, 3),
            "windows": windows,
        }

    def __call__(self, cuts: list[Cut], ctx: StageContext) -> StageResult:
        return run_segmenter(cuts, self.segments, "vad", self.min_duration)
