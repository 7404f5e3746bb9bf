"""Real speech (Debian's Asterisk prompts, 8 kHz; espeak-ng for wideband) and degraded copies of
it with known damage, as cuts the quality stages read."""

from __future__ import annotations

import subprocess
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
from lhotse import Recording, SupervisionSegment
from lhotse.cut import MonoCut

from osum_data.quality.damage import hard_clipped, low_passed, with_noise  # noqa: F401 (re-exported)
from osum_data.run.params import validate_params
from osum_data.run.stage import get_stage
from tests.conftest import speech


def cut_of(path: Path, text: str = "", language: str = "en") -> MonoCut:
    rec = Recording.from_file(path, recording_id=path.stem)
    sup = SupervisionSegment(
        id=path.stem, recording_id=rec.id, start=0, duration=rec.duration, text=text, language=language
    )
    return MonoCut(id=path.stem, start=0, duration=rec.duration, channel=0, recording=rec, supervisions=[sup])


def write(path: Path, audio: np.ndarray, sampling_rate: int = 16000) -> Path:
    sf.write(path, np.clip(audio, -1, 1), sampling_rate, subtype="FLOAT")
    return path


PANGRAM = "The quick brown fox jumps over the lazy dog by the river."


def wideband_speech(tmp: Path, text: str = PANGRAM) -> np.ndarray:
    """espeak-ng speech (22.05 kHz, energy up to 8 kHz and beyond) at 16 kHz."""
    wav = tmp / "espeak.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), text], check=True)
    audio, rate = sf.read(wav, dtype="float32")
    return librosa.resample(audio, orig_sr=rate, target_sr=16000)


def real_speech(name: str = "activated") -> tuple[np.ndarray, str]:
    return speech(name, 16000)


def built(name: str, **params):
    """The stage as a worker builds it, parameters validated."""
    defn = get_stage(name)
    return defn.factory(**validate_params(defn, params)[0])
