"""DNSMOS from the ONNX models shipped in `speechmos`, on real speech and noisy copies (#17)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from osum_data.quality.dnsmos import WINDOW, model_dir, windows
from osum_data.quality.record import measures_of, source_of
from tests.quality_fixtures import built, cut_of, real_speech, with_noise, write


def test_models_ship_in_the_package() -> None:
    for name in ("sig_bak_ovr.onnx", "model_v8.onnx"):
        assert (model_dir() / name).stat().st_size > 100_000


def test_short_clips_are_tiled_to_one_window_and_long_ones_hop_by_a_second() -> None:
    assert [w.size for w in windows(np.ones(16000, dtype=np.float32))] == [WINDOW]
    assert len(windows(np.ones(16000 * 12, dtype=np.float32))) == 3
    assert len(windows(np.ones(16000 * 30, dtype=np.float32), hop=int(9.01 * 16000))) == 3


def test_noise_lowers_background_and_overall_scores_and_batching_changes_nothing(tmp_path: Path) -> None:
    clean, text = real_speech("activated")
    cuts = [cut_of(write(tmp_path / "clean.wav", clean), text)]
    cuts += [cut_of(write(tmp_path / f"n{db}.wav", with_noise(clean, db)), text) for db in (10, 0)]
    stage = built("quality_dnsmos", batch_size=8, threads=1)
    result = stage(cuts, None)
    assert not result.rejected and result.counters["dnsmos_windows"] == 3
    scores = [measures_of(c) for c in result.kept]
    bak = [s["dnsmos_bak"] for s in scores]
    ovrl = [s["dnsmos_ovrl"] for s in scores]
    assert bak[0] > bak[1] > bak[2], bak
    assert ovrl[0] > ovrl[1] > ovrl[2], ovrl
    assert all(1.0 <= s[k] <= 5.0 for s in scores for k in s)
    assert source_of(result.kept[0], "dnsmos_ovrl").startswith("model:dnsmos")
    # one window per run gives the same numbers as all windows in one run
    one_by_one = built("quality_dnsmos", batch_size=1, threads=1).score([clean])[0]
    assert one_by_one == scores[0]
