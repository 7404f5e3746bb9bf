"""Whisper log-mel features on the fly, at the utterance's own length, plus SpecAugment.

Same recipe as Whisper's feature extractor (400-point STFT, hop 160, Slaney mel bank, log10,
floor at max - 8, (x + 4) / 4) but without padding to 30 s: a 3 s cut gives 300 frames, so
batches cost what their audio costs (padding every cut to 30 s is most of the compute on short
utterances). Randomness comes from an explicit generator so batches are reproducible on resume.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch

from training.config import SpecAugmentConfig

N_FFT = 400
HOP = 160
SAMPLING_RATE = 16000


@cache
def mel_filters(n_mels: int) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) Slaney mel bank, as Whisper uses."""
    from transformers.audio_utils import mel_filter_bank

    bank = mel_filter_bank(
        num_frequency_bins=N_FFT // 2 + 1,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=SAMPLING_RATE / 2,
        sampling_rate=SAMPLING_RATE,
        norm="slaney",
        mel_scale="slaney",
    )
    return torch.from_numpy(np.asarray(bank, dtype=np.float32)).T.contiguous()


def log_mel(audio: torch.Tensor | np.ndarray, n_mels: int = 80) -> torch.Tensor:
    """(n_mels, len(audio) // 160) Whisper log-mel of 16 kHz mono audio."""
    x = torch.as_tensor(audio, dtype=torch.float32).reshape(-1)
    window = torch.hann_window(N_FFT)
    stft = torch.stft(x, N_FFT, HOP, window=window, return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = mel_filters(n_mels) @ power
    log = torch.clamp(mel, min=1e-10).log10()
    log = torch.maximum(log, log.max() - 8.0)
    return (log + 4.0) / 4.0


def spec_augment(mel: torch.Tensor, cfg: SpecAugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Time masks, frequency masks, then spec-sub on one (n_mels, T) feature, as WeNet (OSUM's
    toolkit) applies them: a mask starts anywhere on its axis, is 1 to max wide and is clipped at
    the end; a spec-sub span is overwritten by the frames a random distance before it."""
    out = mel.clone()
    n_mels, frames = out.shape
    fill = out.mean() if cfg.fill == "mean" else 0.0

    def draw(low: int, high: int) -> int:
        """Uniform integer in [low, high]."""
        return int(torch.randint(low, max(low, high) + 1, (1,), generator=generator))

    max_t = cfg.time_width_frames if cfg.time_width_frames is not None else int(cfg.time_width * frames)
    if max_t >= 1:
        for _ in range(cfg.time_masks):
            start = draw(0, frames - 1)
            out[:, start : start + draw(1, max_t)] = fill
    if cfg.freq_width >= 1:
        for _ in range(cfg.freq_masks):
            start = draw(0, n_mels - 1)
            out[start : start + draw(1, cfg.freq_width), :] = fill
    if cfg.sub_width >= 1:
        source = out.clone()
        for _ in range(cfg.sub_masks):
            start = draw(0, frames - 1)
            end = min(frames, start + draw(1, cfg.sub_width))
            back = draw(0, start)
            out[:, start:end] = source[:, start - back : end - back]
    return out
