"""The augmentation chain: audiomentations transforms, two of which draw from an AudioBank.

audiomentations' own AddBackgroundNoise and ApplyImpulseResponse read files from disk on every call
(the noise file is re-decoded per sample) and take only plain files, not segments of a manifest; the
two transforms here follow audiomentations' transform interface and its RMS/SNR arithmetic but take
their clips from a bank decoded once per worker. Gain is audiomentations' own. All randomness comes
from the `random` module, as in audiomentations, and `seeded()` fixes it per copy, so a copy is a pure
function of (stage parameters, seed, source audio).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from typing import Any

import numpy as np
from audiomentations import Compose, Gain
from audiomentations.core.transforms_interface import BaseWaveformTransform
from audiomentations.core.utils import calculate_desired_noise_rms, calculate_rms
from lhotse.utils import perturb_num_samples
from scipy.signal import fftconvolve, resample_poly

from osum_data.augment.bank import AudioBank, fit_length

SILENT_RMS = 1e-6


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed `random` and numpy's global generator for one call; restore them afterwards, so other
    code in the worker is unaffected."""
    state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        random.setstate(state)
        np.random.set_state(np_state)


class BankNoise(BaseWaveformTransform):
    """Background noise from a bank at an SNR drawn from [min_snr_db, max_snr_db] (relative to the
    RMS of the input, as audiomentations' AddBackgroundNoise computes it). A clip shorter than the
    input is looped; a silent stretch of noise is replaced by the next clip of the bank."""

    def __init__(self, bank: AudioBank, min_snr_db: float, max_snr_db: float, p: float = 1.0):
        super().__init__(p)
        self.bank, self.min_snr_db, self.max_snr_db = bank, min_snr_db, max_snr_db

    def randomize_parameters(self, samples: np.ndarray, sample_rate: int) -> None:
        self.parameters = {"should_apply": None}  # nothing left over from the previous cut
        super().randomize_parameters(samples, sample_rate)
        if self.parameters["should_apply"]:
            index = random.randrange(len(self.bank))
            self.parameters.update(
                index=index,
                offset=random.randint(0, max(0, self.bank.lengths[index] - samples.size)),
                snr_db=random.uniform(self.min_snr_db, self.max_snr_db),
            )

    def apply(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        p = self.parameters
        clean_rms = calculate_rms(samples)
        for _ in range(len(self.bank)):
            noise, looped = self.bank.segment(p["index"], p["offset"], samples.size)
            noise_rms = calculate_rms(noise)
            if noise_rms >= SILENT_RMS:
                break
            p["index"] = (p["index"] + 1) % len(self.bank)  # deterministic fallback, recorded
            p["offset"] = 0
        else:
            raise ValueError(f"every clip of the {self.bank.what} bank is silent")
        p["looped"] = looped
        if clean_rms < SILENT_RMS:  # nothing to be relative to: no noise (and say so)
            p["gain"] = 0.0
            return samples
        p["gain"] = float(calculate_desired_noise_rms(clean_rms, p["snr_db"]) / noise_rms)
        return (samples + p["gain"] * noise).astype(np.float32)


class BankImpulseResponse(BaseWaveformTransform):
    """Convolution with a room impulse response from a bank. The response is cut at its direct
    path (its peak), so speech is not delayed and word times still hold, the reverberant tail is cut
    at the input's length, and the level is brought back to the input's RMS."""

    def __init__(self, bank: AudioBank, p: float = 1.0):
        super().__init__(p)
        self.bank = bank

    def randomize_parameters(self, samples: np.ndarray, sample_rate: int) -> None:
        self.parameters = {"should_apply": None}  # nothing left over from the previous cut
        super().randomize_parameters(samples, sample_rate)
        if self.parameters["should_apply"]:
            self.parameters["index"] = random.randrange(len(self.bank))

    def apply(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        ir = self.bank.get(self.parameters["index"])
        direct = int(np.argmax(np.abs(ir)))
        self.parameters["direct_index"] = direct
        wet = fftconvolve(samples, ir[direct:])[: samples.size]
        before, after = calculate_rms(samples), calculate_rms(wet)
        return (wet * (before / after) if after > 0 else wet).astype(np.float32)


class SpeedPerturb(BaseWaveformTransform):
    """Kaldi-style speed perturbation (tempo and pitch together) by one of `factors`: resampling by
    the factor and playing at the original rate. The output has lhotse's perturbed length, so the
    supervisions' times scale with lhotse's own `perturb_speed`."""

    def __init__(self, factors: list[float], p: float = 1.0):
        super().__init__(p)
        self.factors = list(factors)

    def randomize_parameters(self, samples: np.ndarray, sample_rate: int) -> None:
        self.parameters = {"should_apply": None}  # nothing left over from the previous cut
        super().randomize_parameters(samples, sample_rate)
        if self.parameters["should_apply"]:
            self.parameters["factor"] = random.choice(self.factors)

    def apply(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        factor = self.parameters["factor"]
        if factor == 1.0:
            return samples
        ratio = Fraction(factor).limit_denominator(100)
        out = resample_poly(samples, ratio.denominator, ratio.numerator)
        return fit_length(out, perturb_num_samples(samples.size, factor)).astype(np.float32)


def build_chain(
    noise: AudioBank | None,
    rir: AudioBank | None,
    snr_db: tuple[float, float],
    noise_p: float,
    rir_p: float,
    gain_db: tuple[float, float] | None,
    speed: list[float] | None,
) -> dict[str, BaseWaveformTransform]:
    """The named steps in the order they run: speed, reverberation, noise, gain."""
    steps: dict[str, BaseWaveformTransform] = {}
    if speed:
        steps["speed"] = SpeedPerturb(speed)
    if rir is not None:
        steps["rir"] = BankImpulseResponse(rir, p=rir_p)
    if noise is not None:
        steps["noise"] = BankNoise(noise, *snr_db, p=noise_p)
    if gain_db is not None:
        steps["gain"] = Gain(min_gain_db=gain_db[0], max_gain_db=gain_db[1], p=1.0)
    return steps


def run_chain(steps: dict[str, BaseWaveformTransform], samples: np.ndarray, sample_rate: int, seed: int):
    """Apply the steps under `seed`; returns (audio, parameters of the steps that applied)."""
    compose = Compose(list(steps.values()), p=1.0)
    with seeded(seed):
        out = compose(samples, sample_rate)
    applied: dict[str, dict[str, Any]] = {
        name: {k: v for k, v in t.parameters.items() if k != "should_apply"}
        for name, t in steps.items()
        if t.parameters.get("should_apply")
    }
    return np.asarray(out, dtype=np.float32), applied
