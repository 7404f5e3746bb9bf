"""MUSAN and RIRS_NOISES through lhotse's recipes: plain cuts labelled by kind, for augmentation."""

from __future__ import annotations

import pytest
from lhotse import CutSet
from lhotse.cut import MultiCut

from tests.corpus_fixtures_para import make_musan, make_rirs_noises
from tests.import_checks import check_repeatable, run_import

BUILDERS = {"musan": make_musan, "rirs_noises": make_rirs_noises}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def imported(request, tmp_path_factory):
    name = request.param
    built = BUILDERS[name](tmp_path_factory.mktemp(name))
    out = tmp_path_factory.mktemp(f"{name}_out")
    return name, built, out, run_import(name, built, out)


def test_plain_cuts_with_recordings_and_kind(imported) -> None:
    name, built, out, report = imported
    cuts = CutSet.from_file(out / "cuts.jsonl.gz").to_eager()
    assert len(cuts) == len(built.cuts) and report.rows == report.cuts + report.rejected
    for cut in cuts:
        assert not cut.supervisions and cut.custom["kind"] in ("noise", "music", "speech", "rir")
        assert cut.load_audio().shape[-1] == pytest.approx(cut.duration * cut.sampling_rate, abs=1)


def test_reimport_is_byte_identical(imported) -> None:
    name, built, out, _ = imported
    check_repeatable(name, built, out)


def test_rirs_keep_listed_air_rirs_and_multichannel(tmp_path) -> None:
    built = make_rirs_noises(tmp_path / "c")
    out = tmp_path / "out"
    run_import("rirs_noises", built, out)
    cuts = CutSet.from_file(out / "cuts.jsonl.gz").to_eager()
    assert isinstance(cuts["RVB2014_type1_rir_largeroom1_far_angla"], MultiCut)
    assert cuts["air_type1_air_binaural_aula_carolina_1_1_1_90_3"].custom["room_id"] == "air_aula_carolina"
    assert {"small-Room001-00001", "medium-Room001-00001"} <= set(cuts.ids)
    assert sorted(p.name for p in out.glob("cuts_*")) == [
        "cuts_iso_noise.jsonl.gz",
        "cuts_point_noise.jsonl.gz",
        "cuts_real_rir.jsonl.gz",
        "cuts_sim_rir.jsonl.gz",
    ]
