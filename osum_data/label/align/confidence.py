"""How much of a word's span is speech: the confidence of alignments nothing else vouches for.

A forced aligner always places every word, even one whose pronunciation was guessed wrong: the
search then parks it where it costs least, often on a pause (the demo's `IAX` sat on silence). The
measure is the share of the word's 10 ms frames whose level reaches the utterance's speech level
(`speech_threshold_db`): ~1 for a word on speech, ~0 for a word on silence. It needs no model and
reads the same on any aligner's spans.
"""

from __future__ import annotations

import numpy as np

FRAME_S = 0.01


def frame_levels_db(audio: np.ndarray, sampling_rate: int) -> np.ndarray:
    """RMS level of every 10 ms frame in dBFS (-120 for digital silence)."""
    n = max(1, round(FRAME_S * sampling_rate))
    frames = len(audio) // n
    if frames == 0:
        return np.full(1, -120.0)
    x = np.asarray(audio[: frames * n], dtype=np.float64).reshape(frames, n)
    return 10 * np.log10(np.mean(x * x, axis=1) + 1e-12)


def speech_threshold_db(levels: np.ndarray, fraction: float = 0.35, range_db: float = 60.0) -> float:
    """Level above which a frame counts as speech: `fraction` of the way from the utterance's floor
    (10th percentile, at most `range_db` under its peak) to its peak (95th percentile)."""
    peak = float(np.percentile(levels, 95))
    floor = max(float(np.percentile(levels, 10)), peak - range_db)
    return floor + fraction * (peak - floor)


def speech_share(levels: np.ndarray, threshold: float, start: float, end: float) -> float:
    """Share of the frames in [start, end) seconds at or above `threshold`."""
    a = max(0, int(start / FRAME_S))
    b = min(len(levels), max(a + 1, int(round(end / FRAME_S))))
    part = levels[a:b]
    return float(np.mean(part >= threshold)) if part.size else 0.0
