"""The acoustic_attributes stage on real recorded speech and on synthetic voices of known pitch."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import Recording, SupervisionSegment
from lhotse.cut import MonoCut

from osum_data.label.acoustic import acoustic_attributes, count_units, estimate_syllables
from osum_data.run.stage import get_stage
from tests.conftest import speech


def make_cut(path: Path, text: str | None = None, gender: str | None = None, language: str = "en") -> MonoCut:
    rec = Recording.from_file(path, recording_id=path.stem)
    sup = SupervisionSegment(
        id=path.stem,
        recording_id=rec.id,
        start=0,
        duration=rec.duration,
        text=text,
        gender=gender,
        language=language,
    )
    return MonoCut(id=path.stem, start=0, duration=rec.duration, channel=0, recording=rec, supervisions=[sup])


def sox_voice(path: Path, f0: float, seconds: float = 1.2, gain_db: float = -6.0) -> Path:
    """A sawtooth at `f0` (harmonic-rich like a voice) through a vowel-ish band-pass, with a gap."""
    subprocess.run(
        [
            "sox",
            "-n",
            "-r",
            "16000",
            "-b",
            "16",
            str(path),
            "synth",
            f"{seconds}",
            "sawtooth",
            f"{f0}",
            "gain",
            "-12",
            "sinc",
            "-n",
            "255",
            "80-3500",
            "gain",
            "-n",
            f"{gain_db}",
            "pad",
            "0.2",
            "0.2",
        ],
        check=True,
    )
    return path


@pytest.mark.parametrize("f0", [95.0, 130.0, 210.0, 320.0])
def test_f0_of_synthetic_voice_is_measured_within_two_percent(tmp_path: Path, f0: float) -> None:
    cut = acoustic_attributes(make_cut(sox_voice(tmp_path / "v.wav", f0), gender="female"))
    pitch = cut.supervisions[0].custom["pitch"]
    assert pitch["f0_hz"] == pytest.approx(f0, rel=0.02)
    assert cut.supervisions[0].custom["label_source"]["pitch"] == "rule:acoustic"


def test_pitch_level_is_relative_to_gender(tmp_path: Path) -> None:
    """140 Hz is a medium male voice but a low female one; 260 Hz is high for both."""
    low = sox_voice(tmp_path / "low.wav", 140.0)
    high = sox_voice(tmp_path / "high.wav", 260.0)
    levels = {
        (g, p.stem): acoustic_attributes(make_cut(p, gender=g)).supervisions[0].custom["pitch"]
        for g in ("male", "female")
        for p in (low, high)
    }
    assert levels[("male", "low")]["level"] == "medium" and levels[("female", "low")]["level"] == "low"
    assert levels[("male", "high")]["level"] == levels[("female", "high")]["level"] == "high"
    assert levels[("male", "low")]["reference"] == "male"


def test_espeak_pitch_variants_are_ordered(tmp_path: Path) -> None:
    """espeak-ng's -p 10 / 50 / 90 must come out in increasing measured F0."""
    measured = []
    for p in (10, 50, 90):
        path = tmp_path / f"p{p}.wav"
        subprocess.run(
            ["espeak-ng", "-v", "en", "-p", str(p), "-w", str(path), "Please enter your password"], check=True
        )
        measured.append(
            acoustic_attributes(make_cut(path, "Please enter your password"))
            .supervisions[0]
            .custom["pitch"]["f0_hz"]
        )
    assert measured[0] < measured[1] < measured[2] and measured[2] / measured[0] > 1.4


def test_real_female_speech(tmp_path: Path) -> None:
    audio, text = speech("agent-pass", 16000)
    path = tmp_path / "agent-pass.wav"
    sf.write(path, audio, 16000)
    stage = get_stage("acoustic_attributes").factory()  # as a worker builds it
    cut = stage([make_cut(path, text, gender="female")], None).kept[0]
    custom = cut.supervisions[0].custom
    assert 150 <= custom["pitch"]["f0_hz"] <= 260 and custom["pitch"]["level"] in ("low", "medium")
    assert custom["speed"]["unit"] == "syllables_per_s" and 2.0 < custom["speed"]["rate"] < 7.0
    assert -40 < custom["energy"]["rms_dbfs"] < -5
    assert custom["label_source"] == {
        "pitch": "rule:acoustic",
        "speed": "rule:acoustic",
        "energy": "rule:acoustic",
    }


def test_energy_levels_follow_gain(tmp_path: Path) -> None:
    loud = acoustic_attributes(make_cut(sox_voice(tmp_path / "a.wav", 200, gain_db=-3)))
    quiet = acoustic_attributes(make_cut(sox_voice(tmp_path / "b.wav", 200, gain_db=-45)))
    e_loud, e_quiet = loud.supervisions[0].custom["energy"], quiet.supervisions[0].custom["energy"]
    assert e_loud["level"] == "high" and e_quiet["level"] == "low"
    assert e_loud["rms_dbfs"] - e_quiet["rms_dbfs"] == pytest.approx(42, abs=1.5)


def test_no_pitch_for_noise_and_no_speed_without_text(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "n.wav", (rng.standard_normal(16000) * 0.1).astype(np.float32), 16000)
    custom = acoustic_attributes(make_cut(tmp_path / "n.wav")).supervisions[0].custom
    assert "pitch" not in custom and "speed" not in custom and "energy" in custom


def test_speaking_rate_units() -> None:
    assert [estimate_syllables(w) for w in ("activated", "hello", "world", "please", "password")] == [
        4,
        2,
        1,
        1,
        2,
    ]
    assert count_units("今天天气不错", "zh") == (6, "chars_per_s")
    assert count_units("Please enter your password.", "en") == (6, "syllables_per_s")
    assert count_units("我用iPhone拍照", "zh")[1] == "chars_per_s"
