"""Speaker-metadata corpora (VoxCeleb, KeSpeech) on fixtures in their real layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
from lhotse import CutSet

from osum_data.corpora import prepare
from tests.corpus_fixtures_para import make_kespeech, make_voxceleb
from tests.import_checks import check_repeatable, import_rejects, run_import

BUILDERS = {"voxceleb": make_voxceleb, "kespeech": make_kespeech}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def imported(request, tmp_path_factory):
    name = request.param
    built = BUILDERS[name](tmp_path_factory.mktemp(name))
    out = tmp_path_factory.mktemp(f"{name}_out")
    return name, built, out, run_import(name, built, out)


def test_counts_labels_and_rejects(imported) -> None:
    name, built, out, report = imported
    assert report.rows == report.cuts + report.rejected and report.cuts > 0


def test_reimport_is_byte_identical(imported) -> None:
    name, built, out, _ = imported
    check_repeatable(name, built, out)


def test_voxceleb_meta_quirks_and_m4a(tmp_path: Path) -> None:
    built = make_voxceleb(tmp_path / "c")
    report = prepare("voxceleb", built.root, tmp_path / "out")
    assert report.unlabelled == {"gender": 1}  # id10999 is not in vox1_meta.csv
    cuts = CutSet.from_file(tmp_path / "out" / "cuts.jsonl.gz").to_eager()
    vox1 = cuts["id10270-x6uYqmx31kE-00001"].supervisions[0]
    assert vox1.custom["speaker_name"] == "Joséphine_Exemple" and vox1.custom["nationality"] == "France"
    vox2 = cuts["id00012-21Uxsk56VDQ-00001"]
    assert vox2.recording.sources[0].source.endswith(".flac") and vox2.supervisions[0].gender == "male"
    assert vox2.load_audio().shape[1] > 0
    names = sorted(p.name for p in (tmp_path / "out").glob("cuts_*.jsonl.gz"))
    assert names == [
        f"cuts_{p}.jsonl.gz" for p in ("vox1_dev", "vox1_test", "vox1_unlisted", "vox2_dev", "vox2_test")
    ]


def test_kespeech_subdialect_and_misaligned_lists(tmp_path: Path) -> None:
    built = make_kespeech(tmp_path / "c")
    prepare("kespeech", built.root, tmp_path / "out")
    sup = CutSet.from_file(tmp_path / "out" / "cuts.jsonl.gz").to_eager()["1000002_0c2d"].supervisions[0]
    assert sup.language == "zh" and sup.custom["subdialect"] == "Beijing" and sup.custom["age_years"] == 71
    utt2spk = built.root / "Tasks" / "ASR" / "dev_phase1" / "utt2spk"
    utt2spk.write_text("1000003_9z9z 1000003\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"dev_phase1: line 1 names different utterances"):
        prepare("kespeech", built.root, tmp_path / "out2")


def test_kespeech_unknown_age_value_names_value_and_file(tmp_path: Path) -> None:
    built = make_kespeech(tmp_path / "c")
    (built.root / "Metadata" / "spk2age").write_text("1000001 中年\n", encoding="utf-8")
    report = prepare("kespeech", built.root, tmp_path / "out")
    assert report.rejects_by_reason["unknown_label"] == 1
    reject = next(
        r for r in import_rejects(tmp_path / "out") if r["code"] == "unknown_label"
    )
    assert (
        "'中年'" in reject["reason"]
        and "kespeech" in reject["reason"]
        and "Metadata/spk2age" in reject["reason"]
    )
