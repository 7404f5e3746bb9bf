"""Reference words, spoken forms, span checks and the SRWT target round trip (no models)."""

from __future__ import annotations

import pytest
from lhotse import MonoCut, SupervisionSegment

from osum_data.label.align.words import (
    RefWord,
    Span,
    check_spans,
    match_tokens,
    reference_words,
    set_word_alignment,
    spans_from_timed_words,
    spoken_form,
)
from osum_data.run.stage import Reject
from osum_data.tasks import parse_target
from osum_data.template.builder import template


@pytest.mark.parametrize(
    "written, spoken",
    [
        ("Mr.", ("mister",)),
        ("7,", ("seven",)),
        ("28.8", ("twenty", "eight", "point", "eight")),
        ("1234", ("one", "two", "three", "four")),
        ("125", ("one", "hundred", "twenty", "five")),
        ("3rd", ("third",)),
        ("$5", ("five", "dollars")),
        ("7:30", ("seven", "thirty")),
        ("twenty-one", ("twenty", "one")),
        ("U.S.", ("u", "s")),
        ("\u201cHello,\u201d", ("hello",)),
        ("don't", ("don't",)),
        ("p.m.", ("p", "m")),
        ("50%", ("fifty", "percent")),
    ],
)
def test_spoken_forms(written, spoken):
    assert spoken_form(written, "en") == spoken


def test_chinese_is_one_word_per_character_without_its_punctuation():
    words = reference_words("今天天气不错，是吧？", "zh")
    assert [w.text for w in words] == ["今", "天", "天", "气", "不", "错", "是", "吧"]
    assert [w.spoken for w in words][5] == ("错",)
    # Latin words and digits inside Chinese stay words
    assert [w.text for w in reference_words("我用iPhone 12", "zh-CN")] == ["我", "用", "iPhone", "12"]
    assert reference_words("第3名", "zh")[1].spoken == ("三",)


def test_punctuation_only_tokens_are_not_words():
    assert [w.text for w in reference_words("... extension - ...", "en")] == ["extension"]


def test_match_tokens_maps_matches_and_substitutions_and_counts_edits():
    mapping, edits = match_tokens(["a", "b", "c", "d"], ["a", "x", "c", "d", "e"])
    assert mapping == [0, 1, 2, 3] and edits == 2
    mapping, edits = match_tokens(["a", "b", "c"], ["a", "c"])
    assert mapping == [0, None, 1] and edits == 1


def test_recognised_words_agree_after_normalisation():
    words = reference_words("Dial seven for Mr. Smith.", "en")
    hyp = [("Dial", 0.0, 0.3), ("7", 0.3, 0.6), ("for", 0.6, 0.7), ("mister", 0.7, 1.0), ("Smith", 1.0, 1.4)]
    spans = spans_from_timed_words("c", words, hyp, "en", 0.0)
    assert [(s.start, s.end) for s in spans] == [(0.0, 0.3), (0.3, 0.6), (0.6, 0.7), (0.7, 1.0), (1.0, 1.4)]
    # a number read as several tokens shares its span; the word spans all of them
    words = reference_words("extension one two three four", "en")
    spans = spans_from_timed_words("c", words, [("extension", 0.0, 0.5), ("1234", 0.6, 1.4)], "en", 0.0)
    assert spans[1].start == pytest.approx(0.6) and spans[4].end == pytest.approx(1.4)


def test_disagreeing_hypothesis_is_rejected_with_both_texts():
    words = reference_words("press zero to reach an operator", "en")
    hyp = [(w, i * 0.3, i * 0.3 + 0.2) for i, w in enumerate("press zero to each an operator".split())]
    with pytest.raises(Reject) as e:
        spans_from_timed_words("cut1", words, hyp, "en", 0.1)
    assert e.value.code == "disagrees" and "'press zero to each an operator'" in e.value.detail
    assert "0.17 > 0.1" in e.value.detail
    # within tolerance it is kept, the substituted word takes the recognised word's time
    spans = spans_from_timed_words("cut1", words, hyp, "en", 0.2)
    assert (spans[3].start, spans[3].end) == (pytest.approx(0.9), pytest.approx(1.1))


W = [RefWord("a", ("a",)), RefWord("b", ("b",)), RefWord("c", ("c",))]


@pytest.mark.parametrize(
    "spans, code",
    [
        ([Span(0, 1), Span(1, 2)], "word_count_mismatch"),
        ([Span(0, 1), None, Span(2, 3)], "unaligned_word"),
        ([Span(0, 1), Span(0.5, 1.5), Span(2, 3)], "non_monotonic"),
        ([Span(0, 1), Span(1, 2), Span(2, 3.5)], "outside_cut"),
        ([Span(0, 1), Span(1, 1), Span(2, 3)], "zero_length_word"),
        ([Span(0, 1), Span(1.2, 1.1), Span(2, 3)], "non_monotonic"),
    ],
)
def test_span_checks_reject_with_reasons(spans, code):
    with pytest.raises(Reject) as e:
        check_spans("cut1", W, spans, duration=3.0)
    assert e.value.code == code and "cut1" in e.value.detail


def test_zero_length_allowed_when_asked_and_frame_rounding_clipped():
    out = check_spans("c", W, [Span(-0.002, 1), Span(1, 1), Span(2, 3.004)], 3.0, allow_zero_length=True)
    assert (out[0].start, out[1].end, out[2].end) == (0.0, 1.0, 3.0)


def _cut(text: str, language: str, duration: float = 3.0) -> MonoCut:
    sup = SupervisionSegment(
        id="u1", recording_id="r1", start=0.0, duration=duration, text=text, language=language
    )
    return MonoCut(id="u1", start=0.0, duration=duration, channel=0, supervisions=[sup])


@pytest.mark.parametrize(
    "text, language, spans, target",
    [
        (
            "Hello, world!",
            "en",
            [(0.0, 0.43), (0.5, 0.91)],
            "<0.0>Hello<0.4> <0.5>world<0.9>",
        ),
        (
            "你好，世界",
            "zh",
            [(0.12, 0.3), (0.3, 0.55), (0.8, 1.0), (1.0, 1.26)],
            "<0.1>你<0.3> <0.3>好<0.6> <0.8>世<1.0> <1.0>界<1.3>",
        ),
    ],
)
def test_srwt_target_round_trip(text, language, spans, target):
    cut = _cut(text, language)
    words = reference_words(text, language)
    set_word_alignment(cut, words, [Span(a, b) for a, b in spans], 0.0, "test")
    out = template(cut, task="srwt")
    assert out.custom["task"] == "<TRANSCRIBE> <ALIGN>"
    assert out.custom["target"] == target  # every word (character for Chinese), 0.1 s resolution
    parsed = parse_target(out.custom["task"], out.custom["target"])
    assert [w.text for w in parsed.words] == [w.text for w in words]
    assert [(w.start, w.end) for w in parsed.words] == [(round(a, 1), round(b, 1)) for a, b in spans]
    assert out.supervisions[0].custom["label_source"]["alignment"] == "test"
