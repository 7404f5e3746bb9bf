"""Vocal-event corpora (ESC-50, VocalSound, Nonspeech7k, AudioSet/FSD50K tables) in their real layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
from lhotse import CutSet

from osum_data.corpora import prepare
from tests.corpus_fixtures_para import make_audioset, make_esc50, make_nonspeech7k, make_vocalsound
from tests.import_checks import check_repeatable, import_rejects, run_import

BUILDERS = {
    "esc50": make_esc50,
    "vocalsound": make_vocalsound,
    "nonspeech7k": make_nonspeech7k,
    "audioset": make_audioset,
}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def imported(request, tmp_path_factory):
    name = request.param
    built = BUILDERS[name](tmp_path_factory.mktemp(name))
    out = tmp_path_factory.mktemp(f"{name}_out")
    return name, built, out, run_import(name, built, out)


def test_every_clip_becomes_a_cut_with_events_or_a_reject(imported) -> None:
    name, built, out, report = imported
    assert report.rows == report.cuts + report.rejected and report.cuts > 0
    for cut in CutSet.from_file(out / "cuts.jsonl.gz"):
        sup = cut.supervisions[0]
        assert sup.text is None and sup.custom["events"] and sup.custom["label_source"]["events"] == "corpus"


def test_reimport_is_byte_identical(imported) -> None:
    name, built, out, _ = imported
    check_repeatable(name, built, out)


def test_esc50_non_vocal_classes_are_rejected_naming_the_category(tmp_path: Path) -> None:
    built = make_esc50(tmp_path / "c")
    prepare("esc50", built.root, tmp_path / "out")
    rejects = {r["id"]: r for r in import_rejects(tmp_path / "out")}
    assert (
        "'dog'" in rejects["1-100032-A-0"]["reason"]
        and "not a human vocal sound" in rejects["1-100032-A-0"]["reason"]
    )
    unknown = rejects["5-200334-B-99"]["reason"]
    assert "'unicorn'" in unknown and "esc50" in unknown and "meta/esc50.csv:8" in unknown


def test_audioset_keeps_vocal_labels_of_multi_label_clips(tmp_path: Path) -> None:
    built = make_audioset(tmp_path / "c")
    prepare("audioset", built.root, tmp_path / "out")
    cuts = CutSet.from_file(tmp_path / "out" / "cuts.jsonl.gz").to_eager()
    laugh = cuts["dev_64760"].supervisions[0].custom
    assert laugh["events"] == ["laugh"]  # Laughter + Chuckle_and_chortle collapse; Human_voice left out
    assert laugh["events_raw"] == ["laughter", "chuckle, chortle", "human voice"]
    assert cuts["-0SdAVK79lg_30.000"].supervisions[0].custom["segment"] == ["30.000", "40.000"]
    parts = {p.name for p in (tmp_path / "out").glob("cuts_*.jsonl.gz")}
    assert parts == {"cuts_dev.jsonl.gz", "cuts_eval_segments.jsonl.gz"}  # vocabulary.csv is no label table


def test_vocalsound_age_from_meta_and_unassigned_part(tmp_path: Path) -> None:
    built = make_vocalsound(tmp_path / "c")
    prepare("vocalsound", built.root, tmp_path / "out")
    cuts = CutSet.from_file(tmp_path / "out" / "cuts.jsonl.gz").to_eager()
    sup = cuts["m0004_0_throatclearing"].supervisions[0]
    assert (sup.speaker, sup.custom["age_years"], sup.custom["age"]) == ("m0004", 67, "old")
    assert [c.id for c in CutSet.from_file(tmp_path / "out" / "cuts_unassigned.jsonl.gz")] == ["f0005_1_sigh"]
