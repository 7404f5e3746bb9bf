"""Word timestamps keep every spoken word, and every model-made label carries its confidence and
source (issue 16, findings 5-7), on real Asterisk prompts where the fault was found."""

from __future__ import annotations

import pytest
from lhotse import MonoCut, SupervisionSegment

from osum_data.demo import asterisk_transcripts, prompt_cut
from osum_data.label.align.sphinx import PocketSphinxAligner
from osum_data.label.align.words import (
    RefWord,
    Span,
    reference_words,
    set_word_alignment,
    spoken_form,
)
from osum_data.run.stage import Reject, StageContext
from osum_data.tasks import parse_target
from osum_data.tasks.formats import FormatError, Word, quantize_spans, render_timestamps
from osum_data.template.builder import template


def ctx(tmp_path) -> StageContext:
    return StageContext(0, 0, tmp_path, "align")


# --- spoken symbols and numbers -------------------------------------------------------------------


def test_spoken_symbols_are_words_read_in_the_language():
    words = reference_words("press * to toggle pause, press # to enter", "en")
    assert [w.text for w in words] == ["press", "*", "to", "toggle", "pause", "press", "#", "to", "enter"]
    assert words[1].spoken == ("star",) and words[6].spoken == ("pound",)
    assert spoken_form("#", "en-GB") == ("hash",) and spoken_form("*", "en-GB") == ("star",)
    assert spoken_form("*", "de") == ("stern",) and spoken_form("#", "fr") == ("dièse",)
    # a dotted address reads its dots; letters with dots do not
    assert spoken_form("www.asterisk.org.", "en") == ("www", "dot", "asterisk", "dot", "org")
    assert spoken_form("A.M.", "en") == ("a", "m")


def test_chinese_symbols_are_their_own_character_words():
    words = reference_words("请按*键，然后按#号键", "zh")
    assert [w.text for w in words] == ["请", "按", "*", "键", "然", "后", "按", "#", "号", "键"]
    assert words[2].spoken == ("星", "号")  # 按*键 is read 按星号键
    assert words[7].spoken == ("井",)  # 按#号键: the 号 is written, not doubled
    assert [w.spoken for w in reference_words("拨打12号", "zh")] == [("拨",), ("打",), ("一", "二"), ("号",)]
    full_width = reference_words("按＊键", "zh")  # the full-width star of Chinese text
    assert [(w.text, w.spoken) for w in full_width] == [
        ("按", ("按",)),
        ("＊", ("星", "号")),
        ("键", ("键",)),
    ]


def test_punctuation_leaves_the_written_word_but_abbreviations_keep_their_dots():
    words = reference_words('"Hello," she said. Call Mr. Smith in the U.S. at 5 p.m. (test.)', "en")
    assert [w.text for w in words] == [
        "Hello", "she", "said", "Call", "Mr.", "Smith", "in", "the", "U.S.", "at", "5", "p.m.", "test",
    ]  # fmt: skip
    assert [w.text for w in reference_words("今天天气不错，是吧？", "zh")][-3:] == ["错", "是", "吧"]
    assert [w.text for w in reference_words("It's 50%, $5 or #3.", "en")] == ["It's", "50%", "$5", "or", "#3"]


# --- no zero-length span after rounding -----------------------------------------------------------


def test_quantized_spans_are_one_step_long_in_order_and_inside_the_audio():
    # 'an' is 40 ms long: rounding alone gives <1.4>an<1.4>
    spans = [(1.02, 1.36), (1.37, 1.41), (1.42, 1.44), (1.45, 1.9)]
    steps = quantize_spans(spans, 0.1)
    assert all(b - a >= 1 for a, b in steps)
    assert all(x[1] <= y[0] for x, y in zip(steps, steps[1:], strict=False))
    assert steps == [(10, 14), (14, 15), (15, 16), (16, 19)]
    # at the end of the audio the words are pulled back instead of past it
    assert quantize_spans([(0.9, 0.96), (0.97, 0.99), (0.99, 1.0)], 0.1, duration=1.0) == [
        (7, 8), (8, 9), (9, 10),
    ]  # fmt: skip
    with pytest.raises(FormatError, match="do not fit"):
        quantize_spans([(0.0, 0.05), (0.05, 0.1), (0.1, 0.15)], 0.1, duration=0.15)


def test_srwt_target_has_no_zero_length_word(tmp_path):
    text = "press 1 for an operator"
    sup = SupervisionSegment(id="u", recording_id="r", start=0, duration=2.0, text=text, language="en")
    cut = MonoCut(id="u", start=0, duration=2.0, channel=0, supervisions=[sup])
    words = reference_words(text, "en")
    spans = [Span(0.2, 0.5), Span(0.52, 0.9), Span(0.91, 1.1), Span(1.37, 1.41), Span(1.42, 1.95)]
    set_word_alignment(cut, words, spans, 0.0, "test")
    target = template(cut, task="srwt").custom["target"]
    parsed = parse_target("<TRANSCRIBE> <ALIGN>", target)
    assert all(w.end > w.start for w in parsed.words), target
    assert all(x.end <= y.start for x, y in zip(parsed.words, parsed.words[1:], strict=False)), target
    assert parsed.words[3] == Word("an", 1.4, 1.5)


def test_chinese_character_target_keeps_the_symbol_and_drops_the_punctuation():
    text = "请按*键，谢谢。"
    sup = SupervisionSegment(id="z", recording_id="r", start=0, duration=2.0, text=text, language="zh")
    cut = MonoCut(id="z", start=0, duration=2.0, channel=0, supervisions=[sup])
    words = reference_words(text, "zh")
    assert [w.text for w in words] == ["请", "按", "*", "键", "谢", "谢"]
    spans = [(0.1, 0.3), (0.3, 0.52), (0.52, 0.98), (0.98, 1.02), (1.3, 1.5), (1.5, 1.53)]
    set_word_alignment(cut, words, [Span(a, b) for a, b in spans], 0.0, "test")
    target = template(cut, task="srwt").custom["target"]
    assert target == "<0.1>请<0.3> <0.3>按<0.5> <0.5>*<1.0> <1.0>键<1.1> <1.3>谢<1.5> <1.5>谢<1.6>"


def test_too_many_words_for_the_audio_are_rejected_not_rendered_zero_length():
    sup = SupervisionSegment(id="u", recording_id="r", start=0, duration=0.2, text="a b c", language="en")
    cut = MonoCut(id="u", start=0, duration=0.2, channel=0, supervisions=[sup])
    words = [RefWord(t, (t,)) for t in "abc"]
    set_word_alignment(cut, words, [Span(0.0, 0.06), Span(0.06, 0.12), Span(0.12, 0.2)], 0.0, "test")
    with pytest.raises(Reject) as e:
        template(cut, task="srwt")
    assert e.value.code == "unrenderable_target" and "do not fit" in e.value.detail
    assert render_timestamps([Word("a", 0.0, 0.04)], 0.1) == "<0.0>a<0.1>"


# --- on the real prompts where the faults were found ----------------------------------------------


def test_the_spoken_star_of_a_real_prompt_gets_its_span(tmp_path):
    texts = asterisk_transcripts()
    cut = prompt_cut("dictate/both_help", texts["dictate/both_help"]).resample(16000)
    res = PocketSphinxAligner()([cut], ctx(tmp_path))
    assert not res.rejected, res.rejected
    items = res.kept[0].supervisions[0].alignment["word"]
    symbols = [a.symbol for a in items]
    assert symbols[:5] == ["press", "*", "to", "toggle", "pause"] and "#" in symbols
    star = items[1]
    assert star.duration >= 0.25 and items[0].end <= star.start and star.end <= items[2].start
    assert star.score >= 0.5  # it lies on speech
    target = template(res.kept[0], task="srwt").custom["target"]
    assert "*<" in target and "#<" in target and "pause,<" not in target


def test_a_guessed_pronunciation_carries_its_confidence_and_the_floor_rejects_it(tmp_path):
    # 'unmuted' is not in CMUdict: espeak-ng pronounces it, and it lands on speech
    good = prompt_cut("conf-unmuted", "You are now unmuted").resample(16000)
    # spy-iax2 says "IAX": the guess does not fit, and the aligner parks the word on the pause after
    # the speech (the demo's `<0.6>IAX<0.8>` in a 0.75 s prompt)
    parked = prompt_cut("spy-iax2", "IAX").resample(16000)
    res = PocketSphinxAligner()([good, parked], ctx(tmp_path))
    ((cut, reason),) = res.rejected
    assert cut.id == "spy-iax2" and reason.code == "low_confidence_guessed_pronunciation"
    assert "'IAX'" in reason.detail and "speech share" in reason.detail
    sup = res.kept[0].supervisions[0]
    assert sup.custom["alignment_guessed_words"] == ["unmuted"]
    assert sup.custom["label_source"]["alignment"] == "model:pocketsphinx-en-us+g2p:espeak-ng"
    assert sup.custom["confidence"]["alignment"] == sup.alignment["word"][-1].score >= 0.5
    assert all(a.score is not None for a in sup.alignment["word"])  # every word's speech share
    # the floor is a validated stage parameter; at 0 the parked word is kept, with its confidence
    low = PocketSphinxAligner(min_guessed_confidence=0.0)([parked], ctx(tmp_path)).kept[0].supervisions[0]
    assert low.custom["confidence"]["alignment"] < 0.5
    from osum_data.run.params import validate_params
    from osum_data.run.stage import get_stage

    with pytest.raises(ValueError, match="min_guessed_confidence"):
        validate_params(get_stage("align_pocketsphinx"), {"min_guessed_confidence": 1.5})


# --- confidence floors of model-made labels ---------------------------------------------------------


def test_whisper_pseudo_labels_under_the_floor_are_rejected_naming_the_measure(tmp_path):
    """`spy-nbs` says "N B S"; Whisper tiny.en hears "and B.S." and is unsure of it."""
    from osum_data.label.align.whisper import WhisperTranscriber

    def untranscribed(name):
        cut = prompt_cut(name, "").resample(16000)
        cut.supervisions = []
        return cut

    stage = WhisperTranscriber(device="cpu")
    res = stage([untranscribed("spy-nbs"), untranscribed("vm-options")], ctx(tmp_path))
    assert [c.id for c, _ in res.rejected] == ["spy-nbs"]
    reason = res.rejected[0][1]
    assert reason.code == "low_confidence_text" and "mean token probability" in reason.detail
    (kept,) = res.kept
    custom = kept.supervisions[0].custom
    assert custom["label_source"]["text"] == "model:whisper-tiny.en"
    assert custom["confidence"]["text"] >= stage.min_confidence == 0.5
    keep_all = WhisperTranscriber(device="cpu", min_confidence=0.0)
    assert len(keep_all([untranscribed("spy-nbs")], ctx(tmp_path)).kept) == 1


# --- provenance --------------------------------------------------------------------------------------


def test_tts_persona_labels_say_tts_not_corpus(tmp_path):
    from lhotse import CutSet

    from osum_data.demo.para import personas_input

    cuts = list(CutSet.from_file(personas_input(tmp_path, limit=2)))
    assert len(cuts) == 2
    for cut in cuts:
        sources = cut.supervisions[0].custom["label_source"]
        assert set(sources) == {"gender", "age", "emotion"}
        assert all(s.startswith("tts:") for s in sources.values()), sources


def test_tsv_label_source_column_is_checked(tmp_path):
    from osum_data.corpora import prepare
    from osum_data.demo import SOUNDS_DIR, write_tsv

    wav = str(SOUNDS_DIR / "activated.wav")
    rows = [
        ["a", wav, "activated", "female", "synthetic:x"],
        ["b", wav, "activated", "female", "bad source!"],
    ]
    (tmp_path / "c").mkdir()
    write_tsv(tmp_path / "c" / "metadata.tsv", ["id", "audio", "text", "gender", "label_source"], rows)
    report = prepare("tsv", tmp_path / "c", tmp_path / "out")
    assert report.rejected == 1
    from lhotse import CutSet

    (cut,) = CutSet.from_file(tmp_path / "out" / "cuts.jsonl.gz")
    assert cut.supervisions[0].custom["label_source"] == {"gender": "synthetic:x"}


def test_event_composite_supervision_spans_the_speech_not_the_event(tmp_path):
    import osum_data.augment.composite  # noqa: F401  (registers event_composite)
    from osum_data.demo.para import events_input
    from osum_data.run.params import validate_params
    from osum_data.run.stage import get_stage

    events = events_input(tmp_path, limit=2)
    defn = get_stage("event_composite")
    stage = defn.factory(**validate_params(defn, {"events": str(events), "positions": ["before"]})[0])
    speech = prompt_cut("agent-pass", "Please enter your password").resample(16000)
    (files := tmp_path / "files").mkdir()
    res = stage([speech], StageContext(0, 0, files, "event_composite"))
    (cut,) = res.kept
    info, sup = cut.custom["composite"], cut.supervisions[0]
    assert info["speech_start"] > 0.3  # the event and the pause come first
    assert sup.start == pytest.approx(info["speech_start"], abs=1e-3)
    assert sup.end == pytest.approx(info["speech_end"], abs=1e-3)
    assert sup.end <= cut.duration + 1e-6 and sup.custom["events"]
