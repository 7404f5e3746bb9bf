"""Transcript checks: language vs declared language, hallucination checks, and ASR agreement
against the local Whisper tiny.en on real speech with right and wrong transcripts (#17 item 1)."""

from __future__ import annotations

from pathlib import Path

from lhotse import MonoCut, SupervisionSegment

from osum_data.quality.asr import error_rates
from osum_data.quality.record import measures_of, source_of
from osum_data.quality.text_checks import max_run, repeat_ratio
from tests.quality_fixtures import built, cut_of, real_speech, with_noise, write


def text_cut(cut_id: str, text: str, language: str | None = "en", duration: float = 3.0) -> MonoCut:
    sup = SupervisionSegment(
        id=cut_id, recording_id=cut_id, start=0, duration=duration, text=text, language=language
    )
    return MonoCut(id=cut_id, start=0, duration=duration, channel=0, supervisions=[sup])


def test_language_of_transcript_against_declared_language() -> None:
    cuts = [
        text_cut("en", "The party you are trying to reach is not available right now."),
        text_cut("de_as_en", "Die Person, die Sie anrufen, ist im Moment leider nicht erreichbar."),
        text_cut("zh_as_en", "您拨打的用户暂时无法接通"),
        text_cut("zh", "您拨打的用户暂时无法接通", language="zh-CN"),
        text_cut("short", "activated"),
        text_cut("undeclared", "hello there", language=None),
    ]
    result = built("quality_language")(cuts, None)
    got = {c.id: measures_of(c).get("lang_match") for c in result.kept}
    assert got == {"en": 1.0, "de_as_en": 0.0, "zh_as_en": 0.0, "zh": 1.0, "short": 1.0, "undeclared": None}
    by_id = {c.id: c for c in result.kept}
    assert measures_of(by_id["en"])["lang_prob"] > 0.9 > measures_of(by_id["de_as_en"])["lang_prob"]
    assert by_id["de_as_en"].supervisions[0].custom["language_detected"] == "de"
    assert source_of(by_id["en"], "lang_match") == "model:py3langid+script"


def test_repeated_ngrams_and_impossible_reading_speed_are_measured() -> None:
    words = "thank you for calling".split()
    assert repeat_ratio(words) == 0 and max_run(words) == 1
    loop = ("thank you " * 6).split()
    assert repeat_ratio(loop) > 0.7 and max_run(loop) == 6
    assert max_run("please please please hold".split()) == 3
    sentence = "the number you have dialed is not in service".split()
    assert max_run(sentence * 3) == 3  # a whole sentence looped
    cuts = [
        text_cut("ok", "Thank you for calling, please hold.", duration=2.5),
        text_cut("loop", "Thank you. " * 12, duration=2.5),
        text_cut(
            "long", "This transcript goes on and on about things nobody said in two seconds.", duration=1.0
        ),
    ]
    result = built("quality_text_checks")(cuts, None)
    m = {c.id: measures_of(c) for c in result.kept}
    assert m["ok"]["units_per_s"] < 7 and m["ok"]["max_run"] == 1
    assert m["loop"]["max_run"] >= 12 and m["loop"]["repeat_ratio"] > 0.8
    assert m["long"]["units_per_s"] > 15


def test_spoken_form_error_rates_forgive_numbers_and_punctuation() -> None:
    assert error_rates("Press 7, then #.", "press seven then pound", "en") == (0.0, 0.0)
    wer, cer = error_rates("please hold the line", "please hold", "en")
    assert wer == 0.5 and 0 < cer < 0.6


def test_asr_agreement_is_low_for_the_right_transcript_and_high_for_a_wrong_one(tmp_path: Path) -> None:
    clean, text = real_speech("agent-incorrect")
    cuts = [
        cut_of(write(tmp_path / "right.wav", clean), text),
        cut_of(write(tmp_path / "wrong.wav", clean), "the weather in paris is sunny today"),
        cut_of(write(tmp_path / "noisy.wav", with_noise(clean, -5)), text),
    ]
    result = built("quality_asr", cpu_threads=1)(cuts, None)
    assert not result.rejected
    wer = {c.id: measures_of(c)["wer"] for c in result.kept}
    assert wer["right"] <= 0.2, (text, result.kept[0].supervisions[0].custom["asr_text"])
    assert wer["wrong"] >= 0.8
    assert wer["noisy"] > wer["right"]
    assert source_of(result.kept[0], "wer") == "model:whisper-tiny.en+spoken_form"
