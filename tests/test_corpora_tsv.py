"""The generic metadata.tsv importer: good rows become cuts, every bad row is reported by number."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from lhotse import CutSet
from lhotse.qa import validate

from osum_data.corpora import PREPARERS, ImportReport, prepare
from osum_data.corpora.tsv import prepare_tsv
from osum_data.errors import UsageError
from tests.corpus_fixtures import make_tsv_audio, prompt_text, source_duration
from tests.import_checks import import_rejects

HEADER = "id audio text language speaker gender age emotion style events start end".split()


def _row(id_: str, audio: str, text: str = "", **cells: str) -> str:
    """One metadata.tsv line; `cells` fills the optional columns by name."""
    values = {"id": id_, "audio": audio, "text": text, **cells}
    return "\t".join(values.get(col, "") for col in HEADER)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A metadata.tsv with good rows and one row for each reject reason; returns what to expect."""
    base = tmp_path_factory.mktemp("tsv_corpus")
    durations = make_tsv_audio(base)
    pass_s = source_duration("agent-pass")
    hello_s = source_duration("hello-world")
    outside = tmp_path_factory.mktemp("elsewhere")
    thanks_abs = outside / "thanks.wav"
    thanks_abs.write_bytes((base / "audio" / "thanks.wav").read_bytes())
    lines = [
        "\t".join(HEADER),
        # 1: every label given, numeric age
        _row(
            "utt1",
            "audio/hello.wav",
            "Hello world.",
            language="en",
            speaker="spk1",
            gender="female",
            age="34",
            emotion="Happy",
            style="news_science",
            events="laugh|Laughter;cough",
        ),
        # 2, 3: two segments of one file
        _row(
            "seg1",
            "audio/long.wav",
            prompt_text("agent-pass"),
            language="en",
            speaker="spk1",
            gender="F",
            age="old",
            start="0",
            end=repr(pass_s),
        ),
        _row(
            "seg2",
            "audio/long.wav",
            "Hello world.",
            language="en",
            speaker="spk1",
            start=repr(pass_s),
            end=repr(pass_s + hello_s),
        ),
        _row("", "audio/hello.wav", "no id"),  # 4
        _row("utt1", "audio/thanks.wav", "again"),  # 5
        _row("gone", "audio/missing.wav", "x"),  # 6
        _row("fake", "audio/not_audio.wav", "x"),  # 7
        _row("grumpy", "audio/hello.wav", "x", emotion="grumpy"),  # 8
        _row("badstart", "audio/long.wav", "x", start="abc", end="1"),  # 9
        _row("backwards", "audio/long.wav", "x", start="2", end="1"),  # 10
        _row("toolong", "audio/long.wav", "x", start="1", end="999"),  # 11
        _row("extra", "audio/hello.wav", "x") + "\tsurplus",  # 12
        "short\taudio/hello.wav\tonly three fields",  # 13
        "",  # a blank line is no row, but it still counts in the numbering
        # 15: absolute path outside the corpus, string age, male code, no events
        _row("abs", str(thanks_abs), "Thank you.", language="en", speaker="spk2", gender="M", age="8"),
        # 16: only a start: the cut runs to the end of the file
        _row("tail", "audio/long.wav", "Goodbye", start=repr(pass_s + hello_s)),
    ]
    (base / "metadata.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path_factory.mktemp("tsv_out")
    report = prepare_tsv(base, out)
    return {
        "base": base,
        "out": out,
        "report": report,
        "durations": durations,
        "pass_s": pass_s,
        "hello_s": hello_s,
        "abs": thanks_abs,
    }


def _cuts(out: Path) -> dict:
    return {c.id: c for c in CutSet.from_file(out / "cuts.jsonl.gz")}


def test_report_accounts_for_every_row(corpus: dict) -> None:
    report: ImportReport = corpus["report"]
    assert (report.rows, report.cuts, report.rejected) == (15, 5, 10)
    assert report.rows == report.cuts + report.rejected
    assert report.rejects_by_reason == {
        "bad_time": 1,
        "duplicate_id": 1,
        "empty_id": 1,
        "end_beyond_duration": 1,
        "end_not_after_start": 1,
        "missing_audio": 1,
        "unknown_label": 1,
        "unreadable_audio": 1,
        "wrong_field_count": 2,
    }
    text = report.summary()
    assert "15 rows -> 5 cuts" in text and "10 rejected" in text and str(corpus["out"]) in text


def test_each_reject_has_its_row_number_and_reason(corpus: dict) -> None:
    rejects = {r["row"]: r for r in import_rejects(corpus["out"])}
    expected = {
        4: ("empty_id", "empty id"),
        5: ("duplicate_id", "'utt1' (first used in row 1)"),
        6: ("missing_audio", "missing.wav"),
        7: ("unreadable_audio", "not_audio.wav"),
        8: ("unknown_label", "'grumpy'"),
        9: ("bad_time", "'abc'"),
        10: ("end_not_after_start", "end 1 is not after start 2"),
        11: ("end_beyond_duration", "999"),
        12: ("wrong_field_count", "13 fields, the header has 12"),
        13: ("wrong_field_count", "3 fields, the header has 12"),
    }
    assert sorted(rejects) == sorted(expected)
    for row, (code, fragment) in expected.items():
        assert rejects[row]["code"] == code, rejects[row]
        assert fragment in rejects[row]["reason"], rejects[row]
    assert rejects[6]["id"] == "gone" and rejects[6]["audio"] == "audio/missing.wav"
    assert rejects[12]["id"] == "extra"  # the id is recovered from an over-long row
    assert rejects[4]["id"] == "row-4"  # a row without an id is named by its number
    assert "Format not recognised" in rejects[7]["reason"]  # the libsndfile message, one line
    assert "\n" not in rejects[7]["reason"]


def test_cuts_carry_text_labels_and_provenance(corpus: dict) -> None:
    cuts = _cuts(corpus["out"])
    assert list(cuts) == ["utt1", "seg1", "seg2", "abs", "tail"]  # row order
    sup = cuts["utt1"].supervisions[0]
    assert (sup.text, sup.language, sup.speaker, sup.gender) == ("Hello world.", "en", "spk1", "female")
    assert sup.custom == {
        "age": "adult",
        "age_years": 34,
        "emotion": "happy",
        "style": "news_science",
        "events": ["laugh", "cough"],
        "label_source": {
            "gender": "corpus",
            "age": "corpus",
            "emotion": "corpus",
            "style": "corpus",
            "events": "corpus",
        },
    }
    seg1 = cuts["seg1"].supervisions[0]
    assert seg1.gender == "female" and seg1.custom["age"] == "old" and "age_years" not in seg1.custom
    assert seg1.text == prompt_text("agent-pass")
    abs_sup = cuts["abs"].supervisions[0]
    assert abs_sup.gender == "male" and abs_sup.custom["age"] == "child" and abs_sup.custom["age_years"] == 8
    assert "events" not in abs_sup.custom
    assert cuts["seg2"].supervisions[0].gender is None and cuts["seg2"].supervisions[0].custom is None


def test_segments_share_a_recording_and_match_the_audio(corpus: dict) -> None:
    cuts = _cuts(corpus["out"])
    pass_s, hello_s = corpus["pass_s"], corpus["hello_s"]
    long_s = corpus["durations"]["long.wav"]
    assert {cuts[i].recording.id for i in ("seg1", "seg2", "tail")} == {"audio/long.wav"}
    assert cuts["abs"].recording.id == corpus["abs"].as_posix()
    assert cuts["utt1"].duration == pytest.approx(source_duration("hello-world"), abs=1e-3)
    assert (cuts["seg1"].start, cuts["seg1"].duration) == pytest.approx((0.0, pass_s), abs=1e-3)
    assert (cuts["seg2"].start, cuts["seg2"].duration) == pytest.approx((pass_s, hello_s), abs=1e-3)
    assert cuts["tail"].end == pytest.approx(long_s, abs=1e-3)
    assert cuts["tail"].duration == pytest.approx(source_duration("vm-goodbye"), abs=1e-3)
    seg2 = cuts["seg2"].load_audio()
    assert seg2.shape[1] == pytest.approx(hello_s * 16000, abs=2)


def test_manifest_is_valid_and_deterministic(corpus: dict, tmp_path: Path) -> None:
    cuts = CutSet.from_file(corpus["out"] / "cuts.jsonl.gz")
    validate(cuts, read_data=True)
    again = prepare("tsv", corpus["base"], tmp_path)
    assert replace(again, out_dir=corpus["out"]) == corpus["report"]
    for name in ("cuts.jsonl.gz", "rejects.jsonl.gz"):
        assert (tmp_path / name).read_bytes() == (corpus["out"] / name).read_bytes()


def test_csv_with_quoted_fields(tmp_path: Path) -> None:
    make_tsv_audio(tmp_path)
    (tmp_path / "metadata.csv").write_text(
        'ID,Audio,Text,Gender\nu1,audio/hello.wav,"Hello, world.",female\nu2,audio/thanks.wav,"Thank you",\n',
        encoding="utf-8",
    )
    report = PREPARERS["tsv"](tmp_path, tmp_path / "out")
    assert (report.rows, report.cuts, report.rejected) == (2, 2, 0)
    cuts = _cuts(tmp_path / "out")
    assert cuts["u1"].supervisions[0].text == "Hello, world."
    assert cuts["u1"].supervisions[0].gender == "female" and cuts["u2"].supervisions[0].gender is None


def test_quotes_in_tsv_transcripts_are_text_and_lose_no_row(tmp_path: Path) -> None:
    """Transcripts are not CSV-quoted: a leading or unbalanced quote is ordinary text. Before the
    fix one unclosed quote at row 10 of 1,000 rows swallowed the 990 rows after it, reporting 0
    rejected."""
    make_tsv_audio(tmp_path)
    texts = [f"utterance {i}" for i in range(1000)]
    texts[3] = '"Hi," she said.'
    texts[9] = '"unbalanced quote at row ten'
    texts[500] = 'say ""twice"" here'
    rows = [["id", "audio", "text"]] + [[f"u{i}", "audio/hello.wav", t] for i, t in enumerate(texts)]
    (tmp_path / "metadata.tsv").write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    report = prepare_tsv(tmp_path, tmp_path / "out")
    assert (report.rows, report.cuts, report.rejected) == (1000, 1000, 0)
    cuts = _cuts(tmp_path / "out")
    assert [cuts[f"u{i}"].supervisions[0].text for i in range(1000)] == texts


def test_csv_quotes_stay_on_their_line(tmp_path: Path) -> None:
    """CSV keeps quoting for commas, but an unbalanced quote rejects its own row only."""
    make_tsv_audio(tmp_path)
    (tmp_path / "metadata.csv").write_text(
        "id,audio,text\n"
        'a,audio/hello.wav,"Hello, world."\n'
        'b,audio/hello.wav,"never closed\n'
        "c,audio/thanks.wav,Thank you\n",
        encoding="utf-8",
    )
    report = prepare_tsv(tmp_path, tmp_path / "out")
    assert (report.rows, report.cuts, report.rejected) == (3, 2, 1)
    (reject,) = import_rejects(tmp_path / "out")
    assert reject["row"] == 2 and reject["code"] == "bad_quoting" and "quote" in reject["reason"]
    assert _cuts(tmp_path / "out")["a"].supervisions[0].text == "Hello, world."


def test_a_row_that_is_not_utf8_is_rejected_by_number(tmp_path: Path) -> None:
    make_tsv_audio(tmp_path)
    raw = (
        b"id\taudio\ttext\n"
        b"a\taudio/hello.wav\tfine\n"
        b"b\taudio/hello.wav\tcaf\xe9 latin-1\n"
        b"c\taudio/thanks.wav\talso fine\n"
    )
    (tmp_path / "metadata.tsv").write_bytes(raw)
    report = prepare_tsv(tmp_path, tmp_path / "out")
    assert (report.rows, report.cuts, report.rejected) == (3, 2, 1)
    (reject,) = import_rejects(tmp_path / "out")
    assert reject["row"] == 2 and reject["code"] == "not_utf8"
    assert "byte 0xe9 at column 22" in reject["reason"]


def test_empty_metadata_names_the_file_and_what_to_write(tmp_path: Path) -> None:
    (tmp_path / "metadata.tsv").write_bytes(b"")
    with pytest.raises(UsageError, match=r"metadata\.tsv is empty: the first line must name the columns"):
        prepare_tsv(tmp_path, tmp_path / "out")


def test_header_only_wav_and_directory_are_rejected_with_plain_reasons(tmp_path: Path) -> None:
    import soundfile as sf

    make_tsv_audio(tmp_path)
    sf.write(tmp_path / "audio" / "header_only.wav", np.zeros(0, dtype=np.int16), 16000)
    (tmp_path / "audio" / "folder.wav").mkdir()
    rows = ["id\taudio\ttext", "h\taudio/header_only.wav\tx", "d\taudio/folder.wav\tx"]
    (tmp_path / "metadata.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    report = prepare_tsv(tmp_path, tmp_path / "out")
    assert report.rejected == 2
    reasons = {r["id"]: (r["code"], r["reason"]) for r in import_rejects(tmp_path / "out")}
    assert reasons["h"][0] == "empty_audio" and "holds no samples" in reasons["h"][1]
    assert "is a directory" in reasons["d"][1]


def test_stereo_is_imported_with_both_channels_and_empty_text_is_allowed(tmp_path: Path) -> None:
    import soundfile as sf

    make_tsv_audio(tmp_path)
    mono, sr = sf.read(tmp_path / "audio" / "hello.wav", dtype="float32")
    sf.write(tmp_path / "audio" / "stereo.wav", np.stack([mono, 0.5 * mono], 1), sr)
    rows = ["id\taudio\ttext", "st\taudio/stereo.wav\tHello world.", "noise\taudio/thanks.wav\t"]
    (tmp_path / "metadata.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    report = prepare_tsv(tmp_path, tmp_path / "out")
    assert (report.cuts, report.rejected) == (2, 0)
    cuts = _cuts(tmp_path / "out")
    assert cuts["st"].channel == [0, 1] and cuts["st"].load_audio().shape[0] == 2
    assert cuts["noise"].supervisions[0].text == ""


def test_missing_required_column_names_file_and_column(tmp_path: Path) -> None:
    (tmp_path / "metadata.tsv").write_text("id\taudio\tspeaker\nu1\ta.wav\ts\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"metadata\.tsv: missing required column\(s\) text"):
        prepare_tsv(tmp_path, tmp_path / "out")


def test_no_metadata_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="metadata.tsv or metadata.csv"):
        prepare_tsv(tmp_path, tmp_path / "out")


def test_report_invariant_is_enforced(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="accounting"):
        ImportReport(rows=3, cuts=1, rejected=1, rejects_by_reason={"x": 1}, out_dir=tmp_path)
