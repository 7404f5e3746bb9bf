"""Cheap quality measures on real speech and on degraded copies of it (issue #17 item 1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from osum_data.quality.record import measures_of, source_of
from tests.quality_fixtures import (
    built,
    cut_of,
    hard_clipped,
    low_passed,
    real_speech,
    wideband_speech,
    with_noise,
    write,
)


def run_stage(name: str, cuts, **params):
    result = built(name, **params)(cuts, None)
    assert not result.rejected, result.rejected
    return [measures_of(c) for c in result.kept], result.kept


def test_snr_tracks_added_noise_within_3_db(tmp_path: Path) -> None:
    clean, text = real_speech("activated")
    cuts = [cut_of(write(tmp_path / "clean.wav", clean), text)]
    cuts += [cut_of(write(tmp_path / f"n{db}.wav", with_noise(clean, db)), text) for db in (20, 10, 0)]
    values, kept = run_stage("quality_snr", cuts)
    snr = [v["snr_db"] for v in values]
    assert snr[0] > 40  # studio prompt
    for estimate, added in zip(snr[1:], (20, 10, 0), strict=True):
        assert abs(estimate - added) < 3, snr
    assert source_of(kept[0], "snr_db") == "rule:wada_snr"
    # the measure sits on the supervision, next to the other labels
    assert kept[0].supervisions[0].custom["quality"]["snr_db"] == snr[0]


def test_clipping_finds_flattened_peaks_even_after_normalising(tmp_path: Path) -> None:
    clean, text = real_speech("activated")
    clipped = hard_clipped(clean)
    cuts = [
        cut_of(write(tmp_path / "clean.wav", clean), text),
        cut_of(write(tmp_path / "clip.wav", clipped), text),
        cut_of(write(tmp_path / "clip_quiet.wav", clipped * 0.3), text),
    ]
    values, _ = run_stage("quality_clipping", cuts)
    ratios = [v["clipping"] for v in values]
    assert ratios[0] < 0.001
    assert ratios[1] > 0.01 and ratios[2] > 0.01, ratios


def test_bandwidth_catches_narrowband_audio_stored_as_wideband(tmp_path: Path) -> None:
    wide = wideband_speech(tmp_path)
    telephone, text = real_speech("activated")  # 8 kHz prompt resampled to 16 kHz
    cuts = [
        cut_of(write(tmp_path / "wide.wav", wide)),
        cut_of(write(tmp_path / "wide_lp.wav", low_passed(wide))),
        cut_of(write(tmp_path / "tel.wav", telephone), text),
    ]
    values, _ = run_stage("quality_bandwidth", cuts)
    hz = [v["bandwidth_hz"] for v in values]
    assert hz[0] > 7000, hz
    assert hz[1] < 4500 and hz[2] < 5000, hz
    assert values[1]["bandwidth_ratio"] < 0.6


def test_speech_ratio_falls_with_silence_and_noise(tmp_path: Path) -> None:
    clean, text = real_speech("activated")
    padded = np.concatenate([clean, np.zeros(16000 * 3, dtype=np.float32)])
    noise = np.random.default_rng(1).standard_normal(16000 * 2).astype(np.float32) * 0.05
    cuts = [
        cut_of(write(tmp_path / "clean.wav", clean), text),
        cut_of(write(tmp_path / "padded.wav", padded), text),
        cut_of(write(tmp_path / "noise.wav", noise)),
    ]
    values, kept = run_stage("quality_speech_ratio", cuts)
    ratio = [v["speech_ratio"] for v in values]
    assert ratio[0] > 0.5
    assert ratio[1] < ratio[0] * 0.5
    assert ratio[2] < 0.1
    assert source_of(kept[0], "speech_ratio").startswith("model:silero_vad")


def test_measures_accumulate_and_keep_existing_labels(tmp_path: Path) -> None:
    clean, text = real_speech("activated")
    cut = cut_of(write(tmp_path / "clean.wav", clean), text)
    cut.supervisions[0].custom = {"emotion": "neutral", "label_source": {"emotion": "corpus"}}
    _, kept = run_stage("quality_snr", [cut])
    _, kept = run_stage("quality_clipping", kept)
    custom = kept[0].supervisions[0].custom
    assert set(custom["quality"]) == {"snr_db", "clipping"}
    assert custom["emotion"] == "neutral" and custom["label_source"]["emotion"] == "corpus"


def test_an_undecodable_cut_is_rejected_alone(tmp_path: Path) -> None:
    clean, text = real_speech("activated")
    good = cut_of(write(tmp_path / "clean.wav", clean), text)
    broken_path = write(tmp_path / "broken.wav", clean)
    broken = cut_of(broken_path, text)
    broken_path.write_bytes(b"RIFF....not audio")
    result = built("quality_snr")([good, broken], None)
    assert [c.id for c in result.kept] == ["clean"]
    assert [(c.id, r.code) for c, r in result.rejected] == [("broken", "error")]


@pytest.mark.parametrize("bad", [{"threshold": 1.5}, {"min_speech_ms": -1}])
def test_speech_ratio_parameters_are_validated(bad) -> None:
    from osum_data.run.params import ParamError, validate_params
    from osum_data.run.stage import get_stage

    with pytest.raises(ParamError):
        validate_params(get_stage("quality_speech_ratio"), bad)
