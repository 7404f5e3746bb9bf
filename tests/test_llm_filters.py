"""Quality filters for LLM-written text: refusals, non-answers, self-naming, tags, length, language,
duplicates — English and Chinese."""

from __future__ import annotations

import pytest

from osum_data.llm.filters import Deduper, LengthBounds, check_text, text_units
from osum_data.llm.language import detect_language, language_mismatch, normalize_code

BOUNDS = LengthBounds(min_units=2, max_units=30)


@pytest.mark.parametrize(
    ("text", "lang", "code"),
    [
        ("I\u2019m sorry, but I can\u2019t help with that request.", "en", "refusal"),
        ("I am unable to answer questions about this.", "en", "refusal"),
        ("抱歉，我无法回答这个问题。", "zh", "refusal"),
        ("很抱歉，我不能提供这方面的信息。", "zh", "refusal"),
        ("From the text alone it is impossible to tell.", "en", "cannot_tell"),
        ("I cannot determine the speaker's mood here.", "en", "cannot_tell"),
        ("仅凭文字无法判断说话人的情绪。", "zh", "cannot_tell"),
        ("这个我不清楚，要看具体情况。", "zh", "cannot_tell"),
        ("As an AI language model, I enjoy sunny days too.", "en", "self_naming"),
        ("I'm an AI assistant, but that sounds fun!", "en", "self_naming"),
        ("Great question! ChatGPT thinks you should go.", "en", "self_naming"),
        ("作为一个人工智能，我觉得这个主意不错。", "zh", "self_naming"),
        ("我是通义千问，很高兴认识你。", "zh", "self_naming"),
        ("You can use the [insert chat_here] for more details.", "en", "artifact"),
        ("Your last name is {your_name}.", "en", "artifact"),
        ("This is a JSON response. Please enter your password.", "en", "artifact"),
        ("The user said: hello there my friend.", "en", "artifact"),
        ("好的，【此处插入名字】，明天见。", "zh", "artifact"),
        ("That sounds <great> to me.", "en", "angle_brackets"),
        ("好的＜笑＞", "zh", "angle_brackets"),
        ("Yes.", "en", "too_short"),
        ("好", "zh", "too_short"),
        (" ".join(["word"] * 31), "en", "too_long"),
        ("今天天气很好，我们一起去公园散步吧。", "en", "wrong_language"),
        ("That sounds like a lovely plan for the weekend.", "zh", "wrong_language"),
        ("Das klingt nach einem wunderbaren Plan für das Wochenende.", "en", "wrong_language"),
    ],
)
def test_bad_answers_are_caught_with_their_code(text, lang, code):
    verdict = check_text(text, lang, BOUNDS)
    assert verdict is not None and verdict[0] == code, verdict
    assert text in verdict[1] or code == "too_long"  # the reason shows the text


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("That sounds like a lovely plan for the weekend.", "en"),
        ("Llamas are calm animals; you could visit a farm that keeps them.", "en"),
        ("I'm sorry to hear that your phone broke; maybe the shop can fix it.", "en"),
        ("听起来是个不错的周末计划，记得带上雨伞。", "zh"),
        ("可以试试先把手机重启一下，再看看问题是否还在。", "zh"),
        ("Sure, GPS works offline too.", "en"),
    ],
)
def test_good_answers_pass(text, lang):
    assert check_text(text, lang, BOUNDS, Deduper()) is None


def test_duplicates_ignore_case_spacing_and_punctuation():
    dedup = Deduper(["Please transcribe this clip."])
    assert check_text("please transcribe   this clip", "en", BOUNDS, dedup)[0] == "duplicate"
    assert check_text("Transcribe the recording, please.", "en", BOUNDS, dedup) is None
    assert check_text("Transcribe the recording please!", "en", BOUNDS, dedup)[0] == "duplicate"
    zh = Deduper()
    assert check_text("请转写这段音频。", "zh", BOUNDS, zh) is None
    assert check_text("请转写这段音频", "zh", BOUNDS, zh)[0] == "duplicate"


def test_language_detection_by_script_then_model():
    assert detect_language("今天天气不错") == "zh"
    assert detect_language("今日はいい天気ですね") == "ja"
    assert detect_language("오늘 날씨가 좋네요") == "ko"
    assert detect_language("What a lovely day it is today") == "en"
    assert detect_language("Quel beau temps il fait aujourd'hui") == "fr"
    assert detect_language("Okay") is None  # too short to say
    assert normalize_code("zh-CN") == normalize_code("cmn") == normalize_code("Chinese") == "zh"
    assert normalize_code("en_US") == normalize_code("English") == "en"
    assert language_mismatch("好的，没问题。OK", "zh") is None  # a Latin word inside Chinese is fine
    assert language_mismatch("Okay", "en") is None
    assert language_mismatch("12345", "en") == "no letters"


def test_text_units_count_chinese_characters_and_other_words():
    assert text_units("今天天气不错") == 6
    assert text_units("hello world") == 2
    assert text_units("我用 Python 写代码") == 6
