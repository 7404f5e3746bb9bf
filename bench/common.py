"""Shared set-up for the benchmarks: a manifest of N cuts over the real demo prompts."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from osum_data.demo import write_cycled_manifest


def demo_manifest(path: Path, n: int) -> Path:
    """n cuts cycling over the real prompts (distinct ids, shared audio files)."""
    return write_cycled_manifest(path, n)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
