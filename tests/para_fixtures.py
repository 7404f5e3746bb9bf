"""Inputs for the tests of the paralinguistic stages: real speech (the Asterisk prompts), noise
and impulse responses made here (their content does not matter, only that it is known), and a tsv
import of each, as a user would make them with `prepare tsv`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from osum_data.corpora import prepare
from osum_data.demo import write_tsv
from osum_data.demo.para import synthetic_rir


def colored_noise(seconds: float, sampling_rate: int, exponent: float, seed: int) -> np.ndarray:
    """1/f^exponent noise (0 white, 1 pink, 2 brown), peak 0.5."""
    n = round(seconds * sampling_rate)
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    freqs = np.maximum(np.fft.rfftfreq(n), 1.0 / n)
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2), n)
    return (noise / np.max(np.abs(noise)) * 0.5).astype(np.float32)


def import_folder(folder: Path, header: list[str], rows: list[list[str]]) -> Path:
    write_tsv(folder / "metadata.tsv", header, rows)
    report = prepare("tsv", folder, folder.parent / f"{folder.name}_cuts")
    assert report.rejected == 0, report.summary()
    return folder.parent / f"{folder.name}_cuts" / "cuts.jsonl.gz"


def noise_manifest(tmp_path: Path) -> Path:
    """Three noises: pink (16 kHz mono, 3 s), brown (22.05 kHz stereo, 1.2 s: shorter than most
    prompts, so it is looped), white (8 kHz, 4 s)."""
    folder = tmp_path / "noise"
    folder.mkdir()
    sf.write(folder / "pink.wav", colored_noise(3.0, 16000, 1.0, 1), 16000)
    brown = np.stack([colored_noise(1.2, 22050, 2.0, 2), colored_noise(1.2, 22050, 2.0, 3)], axis=1)
    sf.write(folder / "brown.flac", brown, 22050)
    sf.write(folder / "white.wav", colored_noise(4.0, 8000, 0.0, 4), 8000)
    rows = [["pink", "pink.wav", ""], ["brown", "brown.flac", ""], ["white", "white.wav", ""]]
    return import_folder(folder, ["id", "audio", "text"], rows)


def rir_manifest(tmp_path: Path) -> Path:
    folder = tmp_path / "rirs"
    folder.mkdir()
    rows = []
    for i, rt60 in enumerate((0.3, 0.7)):
        sf.write(folder / f"rir{i}.wav", synthetic_rir(rt60, 0.8, i), 16000)
        rows.append([f"rir{i}", f"rir{i}.wav", ""])
    return import_folder(folder, ["id", "audio", "text"], rows)
