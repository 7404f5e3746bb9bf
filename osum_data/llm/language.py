"""Which language a piece of text is in: the writing system first, a language-id model second.

Script alone settles what matters most here (Chinese vs English; Japanese and Korean by kana and
hangul) and works on two-character answers where every statistical model guesses. Within one script
(English vs German, both Latin) the bundled py3langid model decides, and only when it is confident:
an unsure guess returns None rather than a wrong code.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from functools import cache

MIN_CONFIDENCE = 0.8
MIN_WORDS_FOR_MODEL = 3

_SCRIPT_OF_NAME = {
    "CJK": "han",
    "HIRAGANA": "kana",
    "KATAKANA": "kana",
    "HANGUL": "hangul",
    "LATIN": "latin",
    "CYRILLIC": "cyrillic",
    "GREEK": "greek",
    "ARABIC": "arabic",
    "HEBREW": "hebrew",
    "DEVANAGARI": "devanagari",
    "THAI": "thai",
}
_ALIASES = {
    "cmn": "zh",
    "yue": "zh",
    "chinese": "zh",
    "mandarin": "zh",
    "cantonese": "zh",
    "english": "en",
    "eng": "en",
    "zho": "zh",
}


def normalize_code(language: str | None) -> str | None:
    """'zh-CN', 'cmn', 'Chinese' -> 'zh'; 'en-US', 'English' -> 'en'; other codes -> primary subtag."""
    if not language:
        return None
    primary = language.strip().lower().replace("_", "-").split("-")[0]
    return _ALIASES.get(primary, primary) or None


def script_counts(text: str) -> Counter:
    counts: Counter = Counter()
    for ch in text:
        if ch.isalpha():
            name = unicodedata.name(ch, "")
            counts[_SCRIPT_OF_NAME.get(name.split(" ")[0], "other")] += 1
    return counts


def dominant_script(text: str) -> str | None:
    counts = script_counts(text)
    if not counts:
        return None
    if counts["kana"]:  # Japanese mixes kanji and kana; any kana means Japanese
        return "kana"
    return counts.most_common(1)[0][0]


@cache
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect_language(text: str, min_confidence: float = MIN_CONFIDENCE) -> str | None:
    """An ISO 639-1 code, or None when the text does not say clearly."""
    script = dominant_script(text)
    if script is None:
        return None
    if script == "han":
        return "zh"
    if script == "kana":
        return "ja"
    if script == "hangul":
        return "ko"
    if len(text.split()) < MIN_WORDS_FOR_MODEL:
        return None
    code, prob = _identifier().classify(text)
    return code if prob >= min_confidence else None


_SCRIPT_OF_LANGUAGE = {"zh": "han", "ja": "kana", "ko": "hangul", "ru": "cyrillic", "uk": "cyrillic"}


def expected_script(language: str) -> str:
    return _SCRIPT_OF_LANGUAGE.get(language, "latin")


def language_mismatch(text: str, language: str | None) -> str | None:
    """Why `text` is not in `language` (None when it is, or when nothing can be said)."""
    expected = normalize_code(language)
    if expected is None:
        return None
    script = dominant_script(text)
    if script is None:
        return "no letters"
    want = expected_script(expected)
    if script != want:
        return f"written in {script} script, expected {expected} ({want})"
    detected = detect_language(text)
    if want == "latin" and detected is not None and detected != expected:
        return f"reads as {detected}, expected {expected}"
    return None
