"""Importers on broken corpora: a short or long CSV row is a `wrong_field_count` reject naming its line,
one unreadable MUSAN file or an empty MUSAN folder does not fail the import, and the CLI says in one
line (exit 2) when CORPUS_DIR or OUT_DIR is a file, or when a folder holds no audio."""

from __future__ import annotations

import pytest
from lhotse import CutSet

from osum_data.cli import main
from osum_data.corpora import prepare
from osum_data.corpora.cremad import read_demographics
from tests.corpus_fixtures_para import make_audioset, make_esc50, make_musan, make_nonspeech7k
from tests.import_checks import import_rejects, run_import

# corpus: (fixture, its CSV relative to the fixture's base, a short row, a long row, the ids they get)
CSV_IMPORTERS = {
    "esc50": (
        make_esc50,
        "ESC-50-master/meta/esc50.csv",
        "9-1-A-26.wav,9",
        "9-2-A-26.wav,9,26,laughing,False,1,A,extra",
        ("9-1-A-26", "9-2-A-26"),
    ),
    "nonspeech7k": (
        make_nonspeech7k,
        "metadata of train set.csv",
        "short.wav",
        "long.wav,cough,1,extra",
        ("train_short", "train_long"),
    ),
    "audioset": (
        make_audioset,
        "FSD50K/FSD50K.ground_truth/dev.csv",
        "99",
        '98,"Cough",/m/x,train,extra',
        ("dev_99", "dev_98"),
    ),
}


@pytest.mark.parametrize("corpus", sorted(CSV_IMPORTERS))
def test_short_and_long_csv_rows_are_wrong_field_count_rejects(corpus, tmp_path):
    make, table, short, long, ids = CSV_IMPORTERS[corpus]
    built = make(tmp_path / "c")
    csv = built.root / table
    header = len(csv.read_text(encoding="utf-8").splitlines()[0].split(","))
    lines = csv.read_text(encoding="utf-8").splitlines()
    csv.write_text("\n".join([*lines, short, long]) + "\n", encoding="utf-8")
    for uid in ids:
        built.rejects[uid] = "wrong_field_count"
    run_import(corpus, built, tmp_path / "out")  # every row is one cut or one reject
    reasons = {r["id"]: r["reason"] for r in import_rejects(tmp_path / "out")}
    n = len(lines)
    assert reasons[ids[0]] == f"line {n + 1} has {short.count(',') + 1} fields, the header has {header}"
    assert reasons[ids[1]] == f"line {n + 2} has {header + 1} fields, the header has {header}"


def test_a_short_row_of_a_metadata_table_is_one_error_naming_the_file(tmp_path):
    table = tmp_path / "VideoDemographics.csv"
    table.write_text("ActorID,Age,Sex,Race,Ethnicity\n1001,51,Male,Caucasian,Not Hispanic\n1002,21\n")
    with pytest.raises(ValueError, match=r"VideoDemographics.csv: line 3 has 2 fields, the header has 5"):
        read_demographics(table)


def test_musan_rejects_an_unreadable_file_and_skips_an_empty_folder(tmp_path):
    built = make_musan(tmp_path / "c")
    broken = built.root / "musan" / "noise" / "free-sound" / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio")
    (built.root / "musan" / "music" / "empty").mkdir()
    built.rejects["broken"] = "unreadable_audio"
    run_import("musan", built, tmp_path / "out")
    (reject,) = import_rejects(tmp_path / "out")
    assert (
        "broken.wav' is unreadable" in reject["reason"] and reject["source"] == "noise/free-sound/broken.wav"
    )


def test_musan_and_longform_without_audio_are_one_error(tmp_path):
    (tmp_path / "musan" / "music" / "x").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no .wav files under"):
        prepare("musan", tmp_path / "musan", tmp_path / "o1")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no audio files .* under"):
        prepare("longform", tmp_path / "empty", tmp_path / "o2")


def test_prepare_says_when_corpus_dir_or_out_dir_is_a_file(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    built = make_esc50(tmp_path / "c")
    cases = [
        (["prepare", "tsv", str(afile), str(tmp_path / "o")], f"{afile} is a file, not a corpus directory"),
        (["prepare", "esc50", str(built.root), str(afile)], f"{afile} is a file; give a directory"),
        (["prepare", "longform", str(tmp_path / "o"), str(tmp_path / "o2")], "does not exist"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists() and afile.read_text() == "x"


def test_a_new_importer_is_a_scan_and_one_registry_entry(tmp_path, monkeypatch):
    """What a new corpus takes: a scan yielding `Row`s, `import_rows`, and its name in PREPARERS; the
    command line, the one reject shape and rows = cuts + rejected come with it."""
    import numpy as np
    import soundfile as sf

    from osum_data.corpora import PREPARERS
    from osum_data.corpora.rows import Row, import_rows

    def prepare_clips(corpus_dir, out_dir):  # clips/<id>.wav with a <id>.txt transcript beside it
        rows = (
            Row(id=w.stem, source=w.name, audio=w, text=w.with_suffix(".txt").read_text(), language="en")
            for w in sorted(corpus_dir.glob("*.wav"))
        )
        return import_rows("clips", out_dir, [(None, rows)])

    monkeypatch.setitem(PREPARERS, "clips", prepare_clips)
    corpus = tmp_path / "clips"
    corpus.mkdir()
    sf.write(corpus / "a.wav", np.sin(np.arange(8000) / 5) * 0.3, 16000)
    (corpus / "b.wav").write_bytes(b"not audio")
    for name in ("a", "b"):
        (corpus / f"{name}.txt").write_text(f"clip {name}")
    assert main(["prepare", "clips", str(corpus), str(tmp_path / "out")]) == 0
    cut = next(iter(CutSet.from_file(tmp_path / "out" / "cuts.jsonl.gz")))
    assert (cut.id, cut.supervisions[0].text, cut.duration) == ("a", "clip a", 0.5)
    [reject] = import_rejects(tmp_path / "out", "clips")
    assert reject["id"] == "b" and reject["code"] == "unreadable_audio" and reject["source"] == "b.wav"
