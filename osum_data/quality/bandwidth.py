"""`quality_bandwidth`: the highest frequency with real energy.

Telephone audio (8 kHz) or MP3 at a low rate stored as 16/44.1 kHz looks wideband by its header
but has nothing above 4 kHz (or the codec's cut-off). The measure averages the power spectrum of
the louder half of the frames (so silence does not flatten it), and returns the highest frequency
whose level is within `floor_db` of the spectrum's peak; `quality.bandwidth_ratio` is that over
the Nyquist frequency, so 0.5 at 16 kHz means upsampled 8 kHz audio.
"""

from __future__ import annotations

import numpy as np
from lhotse.cut import Cut

from osum_data.quality.record import mono, set_measures
from osum_data.run.stage import per_cut_stage

SOURCE = "rule:spectral_rolloff_db"
N_FFT = 512


def effective_bandwidth(samples: np.ndarray, sampling_rate: int, floor_db: float = 50.0) -> float:
    """Highest frequency (Hz) whose mean power is at most `floor_db` below the spectral peak."""
    if samples.size < N_FFT or not np.any(samples):
        return 0.0
    frames = np.lib.stride_tricks.sliding_window_view(samples.astype(np.float64), N_FFT)[:: N_FFT // 2]
    power = np.abs(np.fft.rfft(frames * np.hanning(N_FFT), axis=1)) ** 2
    energy = power.sum(axis=1)
    loud = power[energy >= np.median(energy)]
    spectrum = 10 * np.log10(loud.mean(axis=0) + 1e-20)
    # smooth over 5 bins so one tonal bin or one notch does not decide the edge
    spectrum = np.convolve(spectrum, np.ones(5) / 5, mode="same")
    above = np.nonzero(spectrum >= spectrum.max() - floor_db)[0]
    return float(above[-1] * sampling_rate / N_FFT)


@per_cut_stage("quality_bandwidth", version=1)
def quality_bandwidth(cut: Cut, floor_db: float = 50.0) -> Cut:
    """Add `custom.quality.bandwidth_hz` and `bandwidth_ratio` (of Nyquist), at the native rate."""
    audio = mono(cut, None)
    hz = effective_bandwidth(audio, cut.sampling_rate, floor_db)
    return set_measures(
        cut, {"bandwidth_hz": round(hz, 1), "bandwidth_ratio": round(hz / (cut.sampling_rate / 2), 4)}, SOURCE
    )
