"""Shared fixtures: real recorded speech (Debian's Asterisk prompts) and one local Ray per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from osum_data.demo import SOUNDS_DIR, asterisk_transcripts

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
# Ray workers inherit the environment: let them import the test-only stages.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
sys.path.insert(0, str(TESTS))


def speech(name: str = "activated", sampling_rate: int = 16000) -> tuple[np.ndarray, str]:
    """A real recorded prompt (float32 mono) at `sampling_rate`, with its transcript."""
    from lhotse import Recording

    rec = Recording.from_file(SOUNDS_DIR / f"{name}.wav")
    if sampling_rate != rec.sampling_rate:
        rec = rec.resample(sampling_rate)
    return rec.load_audio()[0], asterisk_transcripts()[name]


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the in-process runner tests (starting Ray costs seconds)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=max(2, os.cpu_count() or 1),
            include_dashboard=False,
            log_to_driver=False,
        )
    yield
    ray.shutdown()


@pytest.fixture
def write_wav(tmp_path):
    def _write(name: str, audio: np.ndarray, sampling_rate: int, subtype: str = "PCM_16") -> Path:
        path = tmp_path / name
        sf.write(path, audio, sampling_rate, subtype=subtype)
        return path

    return _write
