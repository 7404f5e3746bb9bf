"""Known damage for checking the quality measures (tests and bench/quality_fidelity.py): each
function returns a degraded copy of float32 mono audio at 16 kHz, deterministic for a seed."""

from __future__ import annotations

import numpy as np


def with_noise(audio: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """White Gaussian noise `snr_db` below the clip's mean power."""
    noise = np.random.default_rng(seed).standard_normal(audio.size).astype(np.float32)
    return (audio + noise * np.sqrt(np.mean(audio**2) / 10 ** (snr_db / 10))).astype(np.float32)


def hard_clipped(audio: np.ndarray, gain: float = 4.0) -> np.ndarray:
    """Amplified by `gain` and clipped at the original peak (level kept, tops flattened)."""
    peak = float(np.abs(audio).max())
    return np.clip(audio * gain, -peak, peak).astype(np.float32)


def low_passed(audio: np.ndarray, sampling_rate: int = 16000, cutoff_rate: int = 8000) -> np.ndarray:
    """Down to `cutoff_rate` and back: nothing left above cutoff_rate / 2 (telephone audio)."""
    import librosa

    down = librosa.resample(audio, orig_sr=sampling_rate, target_sr=cutoff_rate)
    return librosa.resample(down, orig_sr=cutoff_rate, target_sr=sampling_rate)[: audio.size].astype(
        np.float32
    )


def padded_with_silence(audio: np.ndarray, factor: float = 2.0, seed: int = 0) -> np.ndarray:
    """`factor` x the clip's length of near-silence (a -70 dBFS noise floor) after it."""
    floor = np.random.default_rng(seed).standard_normal(int(audio.size * factor)).astype(np.float32) * 3e-4
    return np.concatenate([audio, floor]).astype(np.float32)


def gain_copy(audio: np.ndarray, gain: float = 1.01) -> np.ndarray:
    return (audio * gain).astype(np.float32)
