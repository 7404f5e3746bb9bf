"""Emotion corpora (IEMOCAP, MELD, ESD, CREMA-D, RAVDESS) on fixtures in their real layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
from lhotse import CutSet

from osum_data.corpora import prepare
from tests.corpus_fixtures_para import make_cremad, make_esd, make_iemocap, make_meld, make_ravdess
from tests.import_checks import check_repeatable, import_rejects, run_import

BUILDERS = {
    "iemocap": make_iemocap,
    "meld": make_meld,
    "esd": make_esd,
    "cremad": make_cremad,
    "ravdess": make_ravdess,
}
PARTS = {
    "iemocap": ["Session1", "Session2"],
    "meld": ["train", "dev", "test"],
    "esd": ["train", "evaluation", "test"],
}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def imported(request, tmp_path_factory):
    name = request.param
    built = BUILDERS[name](tmp_path_factory.mktemp(name))
    out = tmp_path_factory.mktemp(f"{name}_out")
    report = run_import(name, built, out)
    return name, built, out, report


def test_every_row_becomes_a_cut_or_a_reject_with_its_labels(imported) -> None:
    name, built, out, report = imported
    assert report.rows == report.cuts + report.rejected > 0
    assert f"{name}: {report.rows} rows" in report.summary()


def test_parts_are_written_and_add_up(imported) -> None:
    name, built, out, _ = imported
    parts = PARTS.get(name, [])
    ids = [c.id for p in parts for c in CutSet.from_file(out / f"cuts_{p}.jsonl.gz")]
    if parts:
        assert ids == [c.id for c in CutSet.from_file(out / "cuts.jsonl.gz")]
    expected = {"cuts.jsonl.gz", "rejects.jsonl.gz", *(f"cuts_{p}.jsonl.gz" for p in parts)}
    assert {p.name for p in out.glob("*.jsonl.gz")} == expected


def test_reimport_is_byte_identical(imported) -> None:
    name, built, out, _ = imported
    check_repeatable(name, built, out)


def test_iemocap_no_majority_is_kept_for_asr_and_unknown_label_names_value_and_file(tmp_path: Path) -> None:
    built = make_iemocap(tmp_path / "c")
    prepare("iemocap", built.root, tmp_path / "out")
    cuts = CutSet.from_file(tmp_path / "out" / "cuts.jsonl.gz").to_eager()
    xxx = cuts["Ses01F_impro01_M001"].supervisions[0]
    assert "emotion" not in xxx.custom and xxx.custom["emotion_raw"] == "xxx" and xxx.text
    assert xxx.custom["label_source"] == {"gender": "corpus"} and xxx.speaker == "Ses01M"
    assert cuts["Ses01F_impro01_F000"].supervisions[0].custom["vad"] == [2.5, 3.0, 3.5]
    unknown = next(
        r for r in import_rejects(tmp_path / "out") if r["code"] == "unknown_label"
    )
    assert "'zzz'" in unknown["reason"] and "iemocap" in unknown["reason"]
    assert "EmoEvaluation/Ses01F_impro01.txt:" in unknown["reason"]


def test_meld_audio_is_demuxed_from_the_mp4_and_text_repaired(tmp_path: Path) -> None:
    built = make_meld(tmp_path / "c")
    prepare("meld", built.root, tmp_path / "out")
    cut = CutSet.from_file(tmp_path / "out" / "cuts.jsonl.gz").to_eager()["train_dia0_utt0"]
    source = cut.recording.sources[0].source
    assert source.endswith("audio/train_dia0_utt0.flac") and Path(source).is_file()
    audio = cut.load_audio()
    assert (
        audio.shape[1] == pytest.approx(cut.duration * cut.sampling_rate, abs=2) and abs(audio).max() > 0.05
    )
    sup = cut.supervisions[0]
    assert sup.text == "Oh my God, he\u2019s lost it." and sup.speaker == "Phoebe"
    assert sup.custom["episode"] == "S03E06" and sup.custom["sentiment"] == "neutral"
    corrupt = next(
        r for r in import_rejects(tmp_path / "out") if r["id"] == "dev_dia125_utt3"
    )
    assert corrupt["code"] == "unreadable_audio" and "dia125_utt3.mp4" in corrupt["reason"]


def test_esd_reads_each_speakers_encoding_and_checks_the_emotion_column(tmp_path: Path) -> None:
    built = make_esd(tmp_path / "c")
    prepare("esd", built.root, tmp_path / "out")
    cuts = CutSet.from_file(tmp_path / "out" / "cuts.jsonl.gz").to_eager()
    assert cuts["0001_000351"].supervisions[0].text == "我们都很生气。"  # GB2312 file
    assert cuts["0011_001401"].supervisions[0].text == "I am so surprised!"  # UTF-16 file
    conflict = next(
        r for r in import_rejects(tmp_path / "out") if r["code"] == "label_conflict"
    )
    assert (
        "folder Sad" in conflict["reason"]
        and "开心" in conflict["reason"]
        and conflict["source"].endswith(":3")
    )


def test_cremad_age_years_and_ravdess_song_marking(tmp_path: Path) -> None:
    built = make_cremad(tmp_path / "c")
    prepare("cremad", built.root, tmp_path / "out")
    sup = CutSet.from_file(tmp_path / "out" / "cuts.jsonl.gz").to_eager()["1006_IWW_NEU_HI"].supervisions[0]
    assert (sup.custom["age"], sup.custom["age_years"], sup.speaker) == ("old", 74, "1006")
    built = make_ravdess(tmp_path / "r")
    prepare("ravdess", built.root, tmp_path / "rout")
    cuts = CutSet.from_file(tmp_path / "rout" / "cuts.jsonl.gz").to_eager()
    assert cuts["03-02-05-02-01-02-02"].supervisions[0].custom["vocal_channel"] == "song"
    assert cuts["01-01-03-01-02-01-03"].recording.sources[0].source.endswith(".flac")  # demuxed full-AV mp4
