"""Long recordings are read a window at a time by check_audio, downmix and VAD; what they compute
must not depend on the window (real decoders, windows shrunk to seconds here)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from lhotse import Recording

from osum_data.label import audio_windows as aw
from osum_data.label.audio_check import check_audio, downmix
from osum_data.run.stage import Reject


def stereo_cut(tmp_path, seconds: float = 3.3, rate: int = 16000, nan_at: float | None = None):
    rng = np.random.default_rng(0)
    audio = (0.3 * rng.standard_normal((int(seconds * rate), 2))).astype(np.float32)
    if nan_at is not None:
        audio[int(nan_at * rate), 1] = np.nan
    path = tmp_path / "stereo.wav"
    sf.write(path, audio, rate, subtype="FLOAT")
    return Recording.from_file(path).to_cut(), audio


def test_windows_cover_the_cut_exactly(tmp_path):
    cut, audio = stereo_cut(tmp_path)
    parts = list(aw.audio_windows(cut, window=1.0))
    assert [round(s, 3) for s, _ in parts] == [0.0, 1.0, 2.0, 3.0]
    np.testing.assert_array_equal(np.concatenate([a for _, a in parts], axis=1), audio.T)


def test_downmix_in_windows_equals_the_mean_of_the_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(aw, "WINDOW_S", 1.0)
    cut, audio = stereo_cut(tmp_path)
    out = downmix(cut, tmp_path / "files", 16000)
    written, rate = sf.read(out.recording.sources[0].source, dtype="float32")
    assert rate == 16000 and len(written) == len(audio)
    assert np.max(np.abs(written - audio.mean(axis=1))) <= 1.5 / 32768  # int16 rounding only


def test_check_audio_in_windows_finds_a_nan_in_a_late_window(tmp_path, monkeypatch):
    monkeypatch.setattr(aw, "WINDOW_S", 1.0)
    cut, _ = stereo_cut(tmp_path, nan_at=2.5)
    with pytest.raises(Reject) as info:
        check_audio(cut)
    assert info.value.code == "non_finite_samples" and "1 NaN/Inf" in info.value.detail
