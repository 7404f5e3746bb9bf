"""LibriSpeech, AISHELL-1 and CommonVoice importers on small corpora in their real layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
from lhotse import CutSet
from lhotse.qa import validate

from osum_data.corpora import PREPARERS, prepare
from osum_data.corpora.report import ImportReport
from osum_data.errors import UsageError
from tests.corpus_fixtures import (
    CV_COLUMNS,
    librispeech_text,
    make_aishell,
    make_commonvoice,
    make_librispeech,
    source_duration,
)
from tests.import_checks import import_rejects

BUILDERS = {"librispeech": make_librispeech, "aishell": make_aishell, "commonvoice": make_commonvoice}
LANGUAGE = {"librispeech": "en", "aishell": "zh"}
PARTS = {
    "librispeech": ["dev-clean", "test-clean"],
    "aishell": ["train", "dev", "test"],
    "commonvoice": ["en_train", "en_dev", "en_test", "sv-SE_train"],
}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def imported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    name = request.param
    built = BUILDERS[name](tmp_path_factory.mktemp(name))
    out = tmp_path_factory.mktemp(f"{name}_out")
    report = prepare(name, built.root, out)
    return name, built, out, report


def test_report_counts_every_utterance(imported) -> None:
    name, built, out, report = imported
    assert isinstance(report, ImportReport)
    assert (report.rows, report.cuts, report.rejected) == (built.rows, len(built.cuts), len(built.rejects))
    assert report.rows == report.cuts + report.rejected
    expected_reasons: dict[str, int] = {}
    for code in built.rejects.values():
        expected_reasons[code] = expected_reasons.get(code, 0) + 1
    assert report.rejects_by_reason == expected_reasons
    assert report.duration_s == pytest.approx(sum(w.duration for w in built.cuts.values()), abs=1e-2)
    assert f"{report.rows} rows -> {report.cuts} cuts" in report.summary()


def test_cuts_have_ids_texts_labels_and_durations(imported) -> None:
    name, built, out, _ = imported
    cuts = {c.id: c for c in CutSet.from_file(out / "cuts.jsonl.gz")}
    assert set(cuts) == set(built.cuts)
    for uid, want in built.cuts.items():
        cut = cuts[uid]
        sup = cut.supervisions[0]
        assert len(cut.supervisions) == 1 and sup.id == uid and sup.recording_id == uid
        assert sup.text == want.text
        assert sup.language == (LANGUAGE[name] if name in LANGUAGE else uid.split("_")[2])
        assert sup.gender == want.gender
        assert sup.custom["subset"] == want.subset
        assert (sup.custom or {}).get("age") == want.age
        sources = {k for k in ("gender", "age") if getattr(sup, k, None) or sup.custom.get(k)}
        assert sup.custom.get("label_source", {}) == {k: "corpus" for k in sources}
        for key, value in want.custom.items():
            assert sup.custom[key] == value
        assert cut.start == 0 and cut.duration == pytest.approx(want.duration, abs=1e-3)
        assert sup.start == 0 and sup.duration == pytest.approx(cut.duration, abs=1e-6)


def test_durations_match_the_recorded_speech(imported) -> None:
    """The fixture audio is real speech resampled from 8 kHz: its length must survive import."""
    name, built, out, _ = imported
    cuts = CutSet.from_file(out / "cuts.jsonl.gz").to_eager()
    cut = cuts[sorted(built.cuts)[0]]
    audio = cut.load_audio()
    assert audio.shape[1] / cut.sampling_rate == pytest.approx(cut.duration, abs=2e-3)
    durations = {round(source_duration(p), 3) for p in ("hello-world", "auth-thankyou", "agent-pass")}
    assert any(round(c.duration, 3) in durations for c in cuts)


def test_rejects_name_each_skipped_utterance(imported) -> None:
    name, built, out, _ = imported
    rejects = list(import_rejects(out))
    assert {r["id"]: r["code"] for r in rejects} == built.rejects
    for r in rejects:
        assert r["reason"] and r["source"]
        if r["code"] == "unknown_label":
            assert "'X'" in r["reason"] or "'U'" in r["reason"] or "'centuries'" in r["reason"]


def test_every_manifest_is_valid_and_parts_add_up(imported) -> None:
    name, built, out, _ = imported
    all_ids = []
    for part in PARTS[name]:
        cuts = CutSet.from_file(out / f"cuts_{part}.jsonl.gz")
        validate(cuts, read_data=True)
        all_ids += [c.id for c in cuts]
    combined = CutSet.from_file(out / "cuts.jsonl.gz")
    validate(combined)
    assert [c.id for c in combined] == all_ids  # parts in order, each sorted by id
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["cuts.jsonl.gz", "rejects.jsonl.gz"] + [f"cuts_{p}.jsonl.gz" for p in PARTS[name]]
    )


def test_import_is_byte_identical_when_repeated(imported, tmp_path: Path) -> None:
    name, built, out, _ = imported
    PREPARERS[name](built.root, tmp_path)
    for path in out.iterdir():
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name


# --- corpus-specific behaviour -----------------------------------------------------------------


def test_librispeech_accepts_the_parent_directory(tmp_path: Path) -> None:
    built = make_librispeech(tmp_path / "corpus")
    report = prepare("librispeech", built.root.parent, tmp_path / "out")
    assert report.cuts == len(built.cuts)
    assert report.unlabelled == {"gender": 1}  # speaker 777 is not in SPEAKERS.TXT


def test_librispeech_line_without_text_fails_naming_the_line(tmp_path: Path) -> None:
    built = make_librispeech(tmp_path)
    trans = built.root / "dev-clean" / "1462" / "170138" / "1462-170138.trans.txt"
    trans.write_text(trans.read_text() + "1462-170138-0001\n")
    with pytest.raises(ValueError, match=r"1462-170138\.trans\.txt:2"):
        prepare("librispeech", built.root, tmp_path / "out")


def test_aishell_duplicate_transcript_line_is_reported(tmp_path: Path) -> None:
    built = make_aishell(tmp_path)
    transcript = built.root / "data_aishell" / "transcript" / "aishell_transcript_v0.8.txt"
    transcript.write_text(transcript.read_text() + "BAC009S0002W0122 新 文本\n", encoding="utf-8")
    report = prepare("aishell", built.root / "data_aishell", tmp_path / "out")  # data_aishell itself is fine
    assert report.rows == built.rows + 1 and report.cuts == len(built.cuts)
    assert report.rejects_by_reason["duplicate_id"] == 1
    cuts = CutSet.from_file(tmp_path / "out" / "cuts.jsonl.gz").to_eager()
    assert cuts["BAC009S0002W0122"].supervisions[0].text == "新文本"  # lhotse keeps the last line
    dup = [r for r in import_rejects(tmp_path / "out") if r["code"] == "duplicate_id"]
    assert dup[0]["source"].endswith(":1") and "which wins" in dup[0]["reason"]


def test_commonvoice_skips_validated_and_finds_any_locale(tmp_path: Path) -> None:
    built = make_commonvoice(tmp_path)
    prepare("commonvoice", built.root, tmp_path / "out")
    cuts = CutSet.from_file(tmp_path / "out" / "cuts.jsonl.gz").to_eager()
    ids = [c.id for c in cuts]
    assert len(ids) == len(set(ids))  # validated.tsv (a superset) was not imported
    sv = cuts["common_voice_sv-SE_200"].supervisions[0]
    assert sv.language == "sv-SE" and sv.gender == "female" and sv.custom["age"] == "adult"
    unset = cuts["common_voice_en_102"].supervisions[0]
    assert unset.gender is None and "age" not in unset.custom and "label_source" not in unset.custom
    assert "accents" not in unset.custom  # empty CV columns are not copied


def test_commonvoice_release_without_lhotse_columns_fails_clearly(tmp_path: Path) -> None:
    built = make_commonvoice(tmp_path)
    tsv = built.root / "en" / "dev.tsv"
    old = [c for c in CV_COLUMNS if c != "variant"]
    tsv.write_text("\t".join(old) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"dev\.tsv: missing column\(s\) variant"):
        prepare("commonvoice", built.root, tmp_path / "out")


def test_unknown_corpus_and_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown corpus 'timit'"):
        prepare("timit", tmp_path, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare("librispeech", tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UsageError, match="is a file, not a corpus directory"):
        prepare("librispeech", tmp_path / "afile", tmp_path / "out")


def test_librispeech_text_helper() -> None:
    assert librispeech_text("agent-pass") == "PLEASE ENTER YOUR PASSWORD FOLLOWED BY THE POUND KEY"


def test_no_test_doubles_in_production_code() -> None:
    """CommonVoice used to patch lhotse's process pool with unittest.mock at import time; production
    code now calls lhotse's row parser itself, and nothing under osum_data imports unittest."""
    import ast

    import osum_data

    found = []
    for path in Path(osum_data.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "unittest"]
    assert found == []
