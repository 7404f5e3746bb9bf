"""`quality_speech_ratio`: the share of a cut that silero-vad hears as speech.

Music, noise, long silences and wrong segment boundaries all show as a low ratio. The weights ship
in the `silero-vad` package (nothing is downloaded); the model loads once per worker and runs with
as many torch threads as the stage's `resources.num_cpus`.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from lhotse.cut import Cut
from pydantic import Field

from osum_data.quality.record import SAMPLE_RATE, mono, set_measures, stage_threads
from osum_data.run.stage import StageResult, register_stage, rejecting


@register_stage("quality_speech_ratio", version=1)
class SpeechRatio:
    """Add `custom.quality.speech_ratio` (seconds of speech / seconds of audio, silero-vad)."""

    def __init__(
        self,
        threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5,
        min_speech_ms: Annotated[int, Field(ge=0)] = 100,
        min_silence_ms: Annotated[int, Field(ge=0)] = 100,
    ):
        import torch
        from silero_vad import load_silero_vad

        torch.set_num_threads(stage_threads())
        self.model = load_silero_vad()
        self.threshold, self.min_speech_ms, self.min_silence_ms = threshold, min_speech_ms, min_silence_ms
        self.source = f"model:silero_vad@{threshold}"

    def ratio(self, audio: np.ndarray) -> float:
        import torch
        from silero_vad import get_speech_timestamps

        if audio.size == 0:
            return 0.0
        stamps = get_speech_timestamps(
            torch.from_numpy(audio),
            self.model,
            threshold=self.threshold,
            sampling_rate=SAMPLE_RATE,
            min_speech_duration_ms=self.min_speech_ms,
            min_silence_duration_ms=self.min_silence_ms,
            speech_pad_ms=0,
        )
        return min(1.0, sum(s["end"] - s["start"] for s in stamps) / audio.size)

    def __call__(self, cuts: list[Cut], ctx) -> StageResult:
        result = StageResult()
        for cut in cuts:
            with rejecting(result, cut):
                value = round(self.ratio(mono(cut)), 4)
                result.kept.append(set_measures(cut, {"speech_ratio": value}, self.source))
        return result
