"""normalize_text on the real shapes of several languages' transcripts: what is a defect in one
language is ordinary punctuation in another."""

from __future__ import annotations

import pytest

from osum_data.label.text_normalize import lost_letter, normalize_transcript, script_of
from osum_data.run.stage import Reject

KEPT = [
    # Chinese questions with full-width punctuation (AISHELL/WenetSpeech style): NFKC used to turn
    # ？ into ? and the '?' between two Han characters was rejected as a lost letter.
    ("zh", "你去哪？我在家。", "你去哪？我在家。"),
    ("zh-CN", "今天天气怎么样？不错，挺好的！", "今天天气怎么样？不错，挺好的！"),
    (None, "你好吗？还行。", "你好吗？还行。"),  # no language: the script decides
    ("zh", "他说：“明天见”。", "他说：“明天见”。"),
    ("zh", "ＡＩ模型１２３", "AI模型123"),  # full-width letters and digits still fold
    ("ja", "元気ですか？はい。", "元気ですか？はい。"),
    ("yue", "你食咗飯未？", "你食咗飯未？"),
    ("en", "How are you? Fine, thanks.", "How are you? Fine, thanks."),
    ("en", "what? no way", "what? no way"),  # lowercase English: a question, not a lost letter
    ("fr", "Tu viens ? Oui, j'arrive.", "Tu viens ? Oui, j'arrive."),  # French spaces before '?'
    ("es", "¿Dónde estás? me preguntó.", "¿Dónde estás? me preguntó."),
    ("it", "Perché? Non lo so.", "Perché? Non lo so."),
    ("de", "Wie geht's? Gut.", "Wie geht's? Gut."),
    ("fa", "می\u200cخواهم بروم", "می\u200cخواهم بروم"),  # ZWNJ is spelling in Persian
    ("en", "zero\u200bwidth\ufeff text", "zerowidth text"),
    ("en", "join\u200dme", "joinme"),
]

DEFECTS = [
    ("it", "la citt? di Roma", "before a lowercase word"),
    ("it", "perch? no", "before a lowercase word"),
    ("fr", "Il est all? voir", "before a lowercase word"),
    ("pt", "Eu n?o sei", "inside a word"),
    ("en", "Jos?phine went home", "inside a word"),
    ("de", "f?r dich", "inside a word"),
    ("es", "Vienes? no lo sé", "before a lowercase word"),  # no '¿' opened it
    (None, "Caf? latte please", "before a lowercase word"),  # unknown language, cased Latin text
    ("en", "cafÃ© au lait", "mojibake"),
    ("zh", "乱码\ufffd文本", "mojibake"),
]


@pytest.mark.parametrize(("lang", "text", "expected"), KEPT)
def test_ordinary_punctuation_is_kept(lang, text, expected):
    assert normalize_transcript(text, lang) == expected


@pytest.mark.parametrize(("lang", "text", "why"), DEFECTS)
def test_encoding_defects_are_rejected(lang, text, why):
    with pytest.raises(Reject) as info:
        normalize_transcript(text, lang)
    assert info.value.code == "encoding_defect" and why in info.value.detail


def test_script_detection_and_cjk_brackets():
    assert script_of("你好", None) == "cjk" and script_of("Hello there", None) == "latin"
    assert script_of("Привет", None) == "other" and script_of("x", "ru") == "other"
    assert lost_letter("Что? нет", "ru") is None  # Cyrillic: only the inside-word rule applies
    assert normalize_transcript("【噪音】你好（笑）再见", "zh", strip_brackets=["[]", "()"]) == "你好再见"
    with pytest.raises(Reject, match="angle_brackets"):
        normalize_transcript("你好＜unk＞", "zh")  # full-width angle brackets fold to < > and are markup
