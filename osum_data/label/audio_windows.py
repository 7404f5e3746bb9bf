"""Read a cut's audio a window at a time, so hours-long recordings never sit whole in memory.

A 3 h podcast at 44.1 kHz stereo is 3.8 GB as float32; several workers each holding one would
exhaust a node. Stages that touch every sample (decode checks, downmix, VAD) read windows of
`WINDOW_S` seconds instead; short cuts are still read in one go.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from lhotse.cut import Cut

WINDOW_S = 600.0


def window_audio(cut: Cut, start: float, end: float) -> np.ndarray:
    """Audio of `cut` from `start` to `end` seconds (channels x samples, float32)."""
    part = cut if (start, end) == (0.0, cut.duration) else cut.truncate(offset=start, duration=end - start)
    return np.asarray(part.load_audio(), dtype=np.float32)


def audio_windows(cut: Cut, window: float | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """(start in seconds, channels x samples) for consecutive windows of `window` seconds
    (default `WINDOW_S`, read at call time) covering the cut."""
    window = window or WINDOW_S
    start = 0.0
    while True:
        end = min(cut.duration, start + window)
        yield start, window_audio(cut, start, end)
        if end >= cut.duration - 1e-6:
            return
        start = end
