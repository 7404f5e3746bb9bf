"""CTM, TextGrid, RTTM and STM readers (malformed lines named by row), and the import stages."""

from __future__ import annotations

from pathlib import Path

import pytest
from lhotse import MonoCut, Recording, SupervisionSegment

from osum_data.demo import SOUNDS_DIR
from osum_data.label.align.imported import ImportedAligner
from osum_data.label.longform.segments import SegmentsImport
from osum_data.label.timing_files import TimingFileError, read_ctm, read_rttm, read_stm, read_textgrid
from osum_data.run.config import build_config
from osum_data.run.stage import StageContext
from osum_data.yaml_config import ConfigError

CTM = """;; made by another aligner
utt1 1 0.50 0.30 press 0.98
utt1 1 0.80 0.25 zero
utt1 1 1.10 0.15 to
"""

TEXTGRID_LONG = '''File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 2.5
tiers? <exists>
size = 2
item []:
    item [1]:
        class = "IntervalTier"
        name = "words"
        xmin = 0
        xmax = 2.5
        intervals: size = 4
        intervals [1]:
            xmin = 0
            xmax = 0.4
            text = ""
        intervals [2]:
            xmin = 0.4
            xmax = 0.9
            text = "say ""hi"""
        intervals [3]:
            xmin = 0.9
            xmax = 1.5
            text = "world"
        intervals [4]:
            xmin = 1.5
            xmax = 2.5
            text = "sil"
    item [2]:
        class = "TextTier"
        name = "events"
        xmin = 0
        xmax = 2.5
        points: size = 1
        points [1]:
            number = 1.2
            mark = "click"
'''

TEXTGRID_SHORT = """File type = "ooTextFile"
Object class = "TextGrid"

0
2.5
<exists>
1
"IntervalTier"
"Words"
0
2.5
2
0
1.2
"hello"
1.2
2.5
"world"
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_ctm_reads_words_by_utterance(tmp_path):
    words = read_ctm(write(tmp_path, "a.ctm", CTM))["utt1"]
    assert [(w.word, w.start, round(w.end, 3), w.score) for w in words] == [
        ("press", 0.5, 0.8, 0.98),
        ("zero", 0.8, 1.05, None),
        ("to", 1.1, 1.25, None),
    ]


@pytest.mark.parametrize(
    "line, message",
    [
        ("utt1 1 0.5 press", "a.ctm:3: expected 5 or 6 fields"),
        ("utt1 1 abc 0.3 press", "a.ctm:3: start 'abc' is not a number"),
        ("utt1 1 0.5 -0.3 press", "a.ctm:3: duration '-0.3' must be a finite number >= 0"),
        ("utt1 1 0.5 0.3 press high", "a.ctm:3: confidence 'high' is not a number"),
    ],
)
def test_malformed_ctm_lines_name_file_and_row(tmp_path, line, message):
    path = write(tmp_path, "a.ctm", f";; header\nutt1 1 0.1 0.2 ok\n{line}\n")
    with pytest.raises(TimingFileError, match=message):
        read_ctm(path)


def test_textgrid_long_and_short_formats(tmp_path):
    tiers = read_textgrid(write(tmp_path, "u.TextGrid", TEXTGRID_LONG))
    assert list(tiers) == ["words"]  # the point tier is skipped
    assert [(w.word, w.start, w.end) for w in tiers["words"]] == [
        ('say "hi"', 0.4, 0.9),
        ("world", 0.9, 1.5),
        ("sil", 1.5, 2.5),
    ]
    short = read_textgrid(write(tmp_path, "s.TextGrid", TEXTGRID_SHORT))
    assert [(w.word, w.start, w.end) for w in short["Words"]] == [("hello", 0.0, 1.2), ("world", 1.2, 2.5)]
    utf16 = tmp_path / "w.TextGrid"
    utf16.write_bytes(TEXTGRID_SHORT.encode("utf-16"))
    assert read_textgrid(utf16) == short


def test_malformed_textgrids(tmp_path):
    bad = TEXTGRID_LONG.replace("xmax = 1.5\n            text", "xmax = oops\n            text")
    with pytest.raises(TimingFileError, match=r"u.TextGrid:26: expected an interval end, got 'world'"):
        read_textgrid(write(tmp_path, "u.TextGrid", bad))
    backwards = TEXTGRID_SHORT.replace('1.2\n2.5\n"world"', '2.6\n2.5\n"world"')
    with pytest.raises(TimingFileError, match=r"s.TextGrid:16: interval end 2.5 is before its start 2.6"):
        read_textgrid(write(tmp_path, "s.TextGrid", backwards))
    with pytest.raises(TimingFileError, match="file ends while reading"):
        read_textgrid(write(tmp_path, "t.TextGrid", TEXTGRID_SHORT.rsplit("1.2", 1)[0]))
    with pytest.raises(TimingFileError, match="not a text TextGrid"):
        read_textgrid(write(tmp_path, "x.TextGrid", '"ooTextFile"\n"Sound"\n0\n1\n'))


def test_rttm_and_its_errors(tmp_path):
    rttm = write(
        tmp_path,
        "a.rttm",
        "SPKR-INFO rec1 1 <NA> <NA> <NA> unknown A <NA>\n"
        "SPEAKER rec1 1 3.0 2.0 <NA> <NA> B <NA> <NA>\n"
        "SPEAKER rec1 1 0.5 2.0 <NA> <NA> A <NA> <NA>\n",
    )
    turns = read_rttm(rttm)["rec1"]
    assert [(t.start, t.end, t.speaker) for t in turns] == [(0.5, 2.5, "A"), (3.0, 5.0, "B")]
    with pytest.raises(TimingFileError, match=r"b.rttm:2: a SPEAKER line needs at least 8 fields, got 5"):
        read_rttm(write(tmp_path, "b.rttm", "SPEAKER rec1 1 0 1 <NA> <NA> A <NA> <NA>\nSPEAKER rec1 1 0 1\n"))
    with pytest.raises(TimingFileError, match=r"c.rttm:1: onset 'x' is not a number"):
        read_rttm(write(tmp_path, "c.rttm", "SPEAKER rec1 1 x 1 <NA> <NA> A <NA> <NA>\n"))
    with pytest.raises(TimingFileError, match=r"d.rttm:1: unknown record type 'speaker'"):
        read_rttm(write(tmp_path, "d.rttm", "speaker rec1 1 0 1 <NA> <NA> A <NA> <NA>\n"))


def test_stm_and_its_errors(tmp_path):
    stm = write(
        tmp_path,
        "a.stm",
        ";; CATEGORY stuff\n"
        "rec1 1 spk1 0.50 2.00 <o,f0,female> press zero to reach an operator\n"
        "rec1 1 spk2 2.50 3.00 IGNORE_TIME_SEGMENT_IN_SCORING\n"
        "rec1 A spk2 3.10 4.00 thank you\n",
    )
    turns = read_stm(stm)["rec1"]
    assert [(t.start, t.end, t.speaker, t.text, t.labels) for t in turns] == [
        (0.5, 2.0, "spk1", "press zero to reach an operator", ("o", "f0", "female")),
        (3.1, 4.0, "spk2", "thank you", ()),
    ]
    with pytest.raises(TimingFileError, match=r"b.stm:2: end 1.0 is before begin 2.0"):
        read_stm(write(tmp_path, "b.stm", "rec1 1 s 0 1 ok\nrec1 1 s 2.0 1.0 bad\n"))
    with pytest.raises(TimingFileError, match=r"c.stm:1: expected at least 5 fields"):
        read_stm(write(tmp_path, "c.stm", "rec1 1 s 0\n"))


def _prompt_cut(name: str, text: str, cut_id: str) -> MonoCut:
    rec = Recording.from_file(SOUNDS_DIR / f"{name}.wav", recording_id=cut_id)
    cut = rec.to_cut()
    cut.id = cut_id
    cut.supervisions = [
        SupervisionSegment(
            id=cut_id, recording_id=cut_id, start=0, duration=rec.duration, text=text, language="en"
        )
    ]
    return cut


def test_align_import_keeps_agreeing_and_rejects_disagreeing(tmp_path):
    ctm = write(
        tmp_path,
        "a.ctm",
        "good 1 0.20 0.30 press\ngood 1 0.50 0.30 0\ngood 1 0.80 0.10 to\ngood 1 0.90 0.30 reach\n"
        "good 1 1.20 0.10 <eps>\ngood 1 1.30 0.20 an\ngood 1 1.50 0.60 operator\n"
        "bad 1 0.20 0.30 press\nbad 1 0.50 0.30 one\n",
    )
    text = "press 0 to reach an operator"
    good, bad, missing = (_prompt_cut("vm-reachoper", text, i) for i in ("good", "bad", "missing"))
    stage = ImportedAligner(path=str(ctm))
    res = stage([good, bad, missing], StageContext(0, 0, tmp_path, "align"))
    assert [c.id for c in res.kept] == ["good"]
    items = res.kept[0].supervisions[0].alignment["word"]
    assert [(a.symbol, a.start, round(a.end, 3)) for a in items] == [
        ("press", 0.2, 0.5),
        ("0", 0.5, 0.8),
        ("to", 0.8, 0.9),
        ("reach", 0.9, 1.2),
        ("an", 1.3, 1.5),
        ("operator", 1.5, 2.1),
    ]
    assert {c.id: r.code for c, r in res.rejected} == {"bad": "disagrees", "missing": "no_alignment"}


def test_a_malformed_import_file_stops_the_pipeline_at_load_with_its_row(tmp_path):
    ctm = write(tmp_path, "a.ctm", "u 1 0 0.5 ok\nu 1 0.5 x ok\n")
    raw = {
        "imports": ["osum_data.label.align"],
        "stages": [{"stage": "align_import", "name": "align", "path": str(ctm)}],
    }
    with pytest.raises(ConfigError, match=r"stage 'align': .*a.ctm:2: duration 'x' is not a number"):
        build_config(raw, "p.yaml")


def test_segments_import_rttm_drops_or_marks_overlap_and_stm_brings_text(tmp_path):
    long = _prompt_cut("demo-instruct", "", "rec1")
    long.supervisions = []
    rttm = write(
        tmp_path,
        "a.rttm",
        "SPEAKER rec1 1 1.0 4.0 <NA> <NA> A <NA> <NA>\n"
        "SPEAKER rec1 1 4.5 3.0 <NA> <NA> B <NA> <NA>\n"
        "SPEAKER rec1 1 9.0 2.0 <NA> <NA> A <NA> <NA>\n",
    )
    ctx = StageContext(0, 0, tmp_path, "segment")
    res = SegmentsImport(path=str(rttm))([long], ctx)
    assert [(c.custom["segment"]["start"], c.supervisions[0].speaker) for c in res.kept] == [(9.0, "A")]
    assert res.counters["overlap_dropped"] == 2
    seg = res.kept[0]
    assert seg.id == "rec1_00009000-00011000" and seg.custom["source_cut_id"] == "rec1"
    assert seg.duration == pytest.approx(2.0) and seg.load_audio().shape[1] == 16000
    marked = SegmentsImport(path=str(rttm), overlap="mark")([long], ctx).kept
    assert [c.custom["segment"].get("overlap_s") for c in marked] == [0.5, 0.5, None]
    stm = write(tmp_path, "a.stm", "rec1 1 allison 0.0 3.2 if you would like\n")
    (seg,) = SegmentsImport(path=str(stm))([long], ctx).kept
    assert seg.supervisions[0].text == "if you would like" and seg.supervisions[0].speaker == "allison"
    other = _prompt_cut("vm-reachoper", "", "rec2")
    res = SegmentsImport(path=str(stm))([other], ctx)
    assert res.rejected[0][1].code == "no_segments"
