"""Reference words of a transcript, their spoken forms, and the checks every word alignment passes.

An SRWT target wraps each word of the transcript (each character of Chinese) in its start and end
time. Aligners and recognisers do not work on the written words, though: pocketsphinx needs
dictionary words, a CTC model its characters, and Whisper writes "7" where the transcript says
"seven". So each reference word carries its written form (what the target shows) and its spoken
form (lower-case tokens; numbers, abbreviations and spoken symbols read out, per language: `*` is
"star" in English and 星号 in Chinese; the readings are data in `spoken_forms.yaml`). A word's span
runs from the start of its first spoken token to the end of its last. Tokens without anything spoken
("...", "-") are not words and get no span. The written form loses the punctuation around it
(`test.` -> `test`, `好，` -> `好`): OSUM's SRWT targets time words and characters, not punctuation;
an abbreviation keeps its dots (`Mr.`, `U.S.`) and a spoken symbol stays (`*`, `50%`, `$5`).
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from lhotse.cut import Cut
from lhotse.supervision import AlignmentItem

from osum_data.run.stage import Reject

# Han ideographs (with extension A and compatibility ideographs) and kana: aligned per character.
_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_CHAR = re.compile(f"[{_CJK}]")
_UNIT = re.compile(f"[{_CJK}]|[^{_CJK}]+")
_NUMBER = re.compile(r"^(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(st|nd|rd|th)?$")
_WORD_CHARS = re.compile(r"[^\W_]+(?:'[^\W_]+)*")  # letters/digits, inner apostrophes kept


@dataclass(frozen=True)
class RefWord:
    """One word of the transcript: as written (what the target shows) and as spoken."""

    text: str
    spoken: tuple[str, ...]


@dataclass(frozen=True)
class Span:
    start: float
    end: float
    score: float | None = None


def language_of(language: str | None, text: str = "") -> str:
    """'en-US' -> 'en', 'Chinese'/'cmn' -> 'zh'; unknown: 'zh' for Han text, else 'en'."""
    lang = re.split(r"[-_ ]", (language or "").strip().lower())[0]
    if lang.startswith(("zh", "cmn", "yue", "chinese", "mandarin", "cantonese")):
        return "zh"
    if lang in ("english", "eng"):
        return "en"
    if lang:
        return lang
    return "zh" if _CJK_CHAR.search(text) else "en"


@cache
def _forms() -> dict[str, Any]:
    return yaml.safe_load((Path(__file__).parent / "spoken_forms.yaml").read_text(encoding="utf-8"))


def _rules(lang: str, tag: str | None = None) -> dict[str, Any]:
    """The readings of `lang`, with those of its regional tag (`en-gb`) over them, symbol by symbol."""
    forms = _forms()
    out = {**forms["default"], **forms.get(lang, {})}
    region = (tag or "").strip().lower().replace("_", "-")
    if region != lang and region in forms:
        for key, value in forms[region].items():
            out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    return out


# Symbols that are read aloud in some language: never glued to a neighbouring character as
# punctuation, and never stripped from the written form.
SPOKEN_SYMBOLS = "%&+@#=$*€£＊＃％＋＝＠＄"  # full-width forms too (Chinese text keeps them)


def _is_punct(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "PSZ" and ch not in SPOKEN_SYMBOLS


def written_form(unit: str, language: str | None = None) -> str:
    """What the SRWT target shows for a unit: the unit without the punctuation around it; an
    abbreviation of the language's table (`Mr.`, `etc.`) or a dotted letter sequence (`U.S.`,
    `a.m.`) keeps its final dot. '' when nothing is left."""
    lang = language_of(language, unit)
    text = unit
    while text and _is_punct(text[0]):
        text = text[1:]
    end = len(text)
    while end and _is_punct(text[end - 1]):
        end -= 1
    core = text[:end]
    if text[end : end + 1] == "." and core:
        low = unicodedata.normalize("NFKC", core).lower()
        abbreviations = _rules(lang, language).get("abbreviations", {})
        if f"{low}." in abbreviations or (
            "." in low and all(len(p) == 1 and p.isalpha() for p in low.split("."))
        ):
            core += "."
    return core


def split_units(text: str) -> list[str]:
    """Whitespace tokens, with Han/kana runs split into single characters; punctuation next to a
    character stays glued to it ("好，" is one unit), so joining the units gives the text back."""
    units: list[str] = []
    for token in text.split():
        if not _CJK_CHAR.search(token):
            units.append(token)
            continue
        parts = _UNIT.findall(token)
        merged: list[str] = []
        lead = ""
        for part in parts:
            if not _CJK_CHAR.match(part) and all(_is_punct(c) for c in part):
                if merged:
                    merged[-1] += part  # trailing punctuation joins the character before it
                else:
                    lead += part  # leading punctuation joins the next one
                continue
            merged.append(lead + part)
            lead = ""
        if lead:
            merged.append(lead)
        units.extend(merged)
    return units


def _number_words(number: str, lang: str, rules: dict[str, Any]) -> list[str] | None:
    m = _NUMBER.match(number)
    if not m:
        return None
    whole, frac, suffix = m.group(1).replace(",", ""), m.group(2), m.group(3)
    if lang == "zh":
        digits = rules.get("digits", {})
        return [digits.get(c, c) for c in number if c.isdigit()]
    from num2words import num2words

    try:
        if (
            frac is None
            and suffix is None
            and "," not in m.group(1)
            and len(whole) >= rules["digit_by_digit_from"]
        ):
            words = [num2words(int(c), lang=lang) for c in whole]
        elif suffix:
            words = [num2words(int(whole), lang=lang, to="ordinal")]
        else:
            words = [num2words(float(f"{whole}.{frac}") if frac else int(whole), lang=lang)]
    except (NotImplementedError, OverflowError, ValueError):
        return None
    out = [w for text in words for w in re.split(r"[\s,\-]+", text.lower()) if w]
    return [w for w in out if w not in rules.get("number_fillers", [])]


def _url_like(core: str) -> bool:
    """'www.asterisk.org': dot-separated parts of which at least two are words (not 'U.S.', 'H.323',
    '28.8'); its dots are read out."""
    parts = core.split(".")
    return len(parts) > 1 and all(parts) and sum(len(p) > 1 and p.isalpha() for p in parts) >= 2


def spoken_form(unit: str, language: str | None = None) -> tuple[str, ...]:
    """The spoken tokens of one written unit: lower case, punctuation dropped, abbreviations,
    symbols and numbers read out ('Mr.' -> mister, '7,' -> seven, '28.8' -> twenty eight point
    eight, '*' -> star, 'www.asterisk.org' -> www dot asterisk dot org); a Han character is
    itself. `language` may carry a region ('en-GB': '#' is hash, not pound)."""
    lang = language_of(language, unit)
    rules = _rules(lang, language)
    low = unicodedata.normalize("NFKC", unit).lower()
    if _CJK_CHAR.search(low):
        out: list[str] = []
        for part in _UNIT.findall(low):
            out += (
                [part] if _CJK_CHAR.match(part) else list(spoken_form(part, "en" if lang == "zh" else lang))
            )
        return tuple(out)
    stripped = low.strip("\"'“”‘’«»()[]{}¿¡,;:!?…")
    abbreviations = rules.get("abbreviations", {})
    for key in (stripped, stripped.rstrip(".")):
        if key in abbreviations:
            return tuple(abbreviations[key])
    core = stripped.rstrip(".")
    currency = rules.get("currency", {})
    if core[:1] in currency and core[1:2].isdigit():  # "$5" is read "five dollars"
        amount = _number_words(core[1:], lang, rules)
        if amount is not None:
            return (*amount, *currency[core[0]])
    number = _number_words(core, lang, rules) if core[:1].isdigit() else None
    if number is not None:
        return tuple(number)
    tokens: list[str] = []
    symbols = rules.get("symbols", {})
    pieces = re.split(r"[-/.:–—]+", core)
    if rules.get("dot") and _url_like(core):
        pieces = [p for piece in core.split(".") for p in (piece, ".")][:-1]
    # Hyphens, slashes, dots and colons inside a word separate spoken parts ("twenty-one", "U.S.",
    # "and/or", "7:30").
    for piece in pieces:
        if piece == ".":
            tokens += rules["dot"]
            continue
        for sym in symbols:
            if sym in piece:
                piece = piece.replace(sym, f" {sym} ")
        for part in piece.split():
            if part in symbols:
                tokens += symbols[part]
                continue
            num = _number_words(part, lang, rules) if part[:1].isdigit() else None
            if num is not None:
                tokens += num
                continue
            tokens += _WORD_CHARS.findall(part)
    return tuple(tokens)


def reference_words(text: str, language: str | None = None) -> list[RefWord]:
    """The words of a transcript that get a span each (units with something spoken)."""
    lang = language_of(language, text)
    tag = language or lang
    words = []
    units = split_units(text)
    for i, unit in enumerate(units):
        spoken = spoken_form(unit, tag)
        following = spoken_form(units[i + 1], tag) if i + 1 < len(units) else ()
        if len(spoken) > 1 and unit in SPOKEN_SYMBOLS and following[:1] == spoken[-1:]:
            spoken = spoken[:-1]  # 按*号键: the 号 of 星号 is written after the symbol
        if spoken:
            words.append(RefWord(written_form(unit, tag) or unit, spoken))
    return words


def word_spans_from_tokens(words: list[RefWord], token_spans: list[Span | None]) -> list[Span | None]:
    """Fold spans of the spoken tokens (in order, all words' tokens concatenated) into one span per
    word: first token start to last token end; None where none of its tokens got one."""
    out: list[Span | None] = []
    i = 0
    for w in words:
        mine = [s for s in token_spans[i : i + len(w.spoken)] if s is not None]
        i += len(w.spoken)
        if not mine:
            out.append(None)
            continue
        scores = [s.score for s in mine if s.score is not None]
        out.append(Span(mine[0].start, mine[-1].end, sum(scores) / len(scores) if scores else None))
    return out


def hypothesis_tokens(hyp: list[tuple[str, float, float]], language: str) -> tuple[list[str], list[Span]]:
    """Spoken tokens of the recognised words, each with a time span; a word read as several tokens
    ("1234", a run of Chinese characters) shares its span out evenly."""
    tokens, spans = [], []
    for word, start, end in hyp:
        parts = spoken_form(word, language)
        step = (end - start) / len(parts) if parts else 0.0
        for k, p in enumerate(parts):
            tokens.append(p)
            spans.append(Span(start + k * step, start + (k + 1) * step))
    return tokens, spans


def match_tokens(ref: list[str], hyp: list[str]) -> tuple[list[int | None], int]:
    """Levenshtein alignment of two token lists: for each reference token the index of the
    hypothesis token it is matched or substituted with (None if deleted), and the edit count."""
    n, m = len(ref), len(hyp)
    dist = np.zeros((n + 1, m + 1), dtype=np.int32)
    dist[:, 0] = np.arange(n + 1)
    dist[0, :] = np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost = 0 if ref[i - 1] == hyp[j - 1] else 1
            dist[i, j] = min(dist[i - 1, j - 1] + cost, dist[i - 1, j] + 1, dist[i, j - 1] + 1)
    mapping: list[int | None] = [None] * n
    i, j = n, m
    while i > 0 and j > 0:
        cost = 0 if ref[i - 1] == hyp[j - 1] else 1
        if dist[i, j] == dist[i - 1, j - 1] + cost:
            mapping[i - 1] = j - 1
            i, j = i - 1, j - 1
        elif dist[i, j] == dist[i - 1, j] + 1:
            i -= 1
        else:
            j -= 1
    return mapping, int(dist[n, m])


def spans_from_timed_words(
    cut_id: str,
    words: list[RefWord],
    timed: list[tuple[str, float, float]],
    language: str,
    max_error: float,
    what: str = "recognised",
) -> list[Span | None]:
    """Reference word spans from timed words of another source (a recogniser, an imported file):
    tokens matched by edit distance, a `disagrees` reject when the token error rate exceeds
    `max_error`."""
    ref_tokens = [t for w in words for t in w.spoken]
    hyp_tokens, hyp_spans = hypothesis_tokens(timed, language)
    mapping, edits = match_tokens(ref_tokens, hyp_tokens)
    rate = edits / len(ref_tokens)
    if rate > max_error:
        raise Reject(
            "disagrees",
            f"cut {cut_id}: {what} {' '.join(hyp_tokens)[:200]!r} vs reference "
            f"{' '.join(ref_tokens)[:200]!r}: token error rate {rate:.2f} > {max_error}",
        )
    return word_spans_from_tokens(words, [None if j is None else hyp_spans[j] for j in mapping])


# --- checks --------------------------------------------------------------------------------------

EPSILON = 0.005  # seconds a span may overrun the cut (frame rounding of the aligners)


def check_spans(
    cut_id: str,
    words: list[RefWord],
    spans: list[Span | None],
    duration: float,
    allow_zero_length: bool = False,
) -> list[Span]:
    """One span per reference word, each inside [0, duration], in order, with positive length (unless
    allowed): otherwise a Reject naming the first offending word. Spans within EPSILON outside the
    cut are clipped to it."""
    if len(spans) != len(words):
        raise Reject(
            "word_count_mismatch", f"cut {cut_id}: {len(spans)} spans for {len(words)} reference words"
        )
    out: list[Span] = []
    prev_end = 0.0
    for i, (w, s) in enumerate(zip(words, spans, strict=True)):
        if s is None:
            raise Reject("unaligned_word", f"cut {cut_id}: word {i + 1} {w.text!r} got no span")
        if s.start < -EPSILON or s.end > duration + EPSILON:
            raise Reject(
                "outside_cut",
                f"cut {cut_id}: word {i + 1} {w.text!r} at {s.start:.3f}-{s.end:.3f} s, "
                f"cut is {duration:.3f} s",
            )
        s = Span(max(0.0, s.start), min(duration, s.end), s.score)
        if s.end < s.start:
            raise Reject("non_monotonic", f"cut {cut_id}: word {i + 1} {w.text!r} ends before it starts")
        if s.start < prev_end - EPSILON:
            raise Reject(
                "non_monotonic",
                f"cut {cut_id}: word {i + 1} {w.text!r} starts at {s.start:.3f} s, before the previous "
                f"word ends ({prev_end:.3f} s)",
            )
        if s.end - s.start <= 0 and not allow_zero_length:
            raise Reject("zero_length_word", f"cut {cut_id}: word {i + 1} {w.text!r} has zero length")
        s = Span(max(s.start, prev_end), s.end, s.score) if s.start < prev_end else s
        out.append(s)
        prev_end = s.end
    return out


def set_word_alignment(cut: Cut, words: list[RefWord], spans: list[Span], offset: float, source: str) -> Cut:
    """Write `supervision.alignment["word"]` (times relative to the cut start, as lhotse keeps
    them) and record which aligner made it in `custom.label_source.alignment`."""
    sup = cut.supervisions[0]
    limit = math.floor(cut.duration * 1000) / 1000  # milliseconds, never past the cut's end
    items = []
    for w, s in zip(words, spans, strict=True):
        start = min(round(offset + s.start, 3), limit)
        end = min(round(offset + s.end, 3), limit)
        score = None if s.score is None else round(float(s.score), 4)
        items.append(AlignmentItem(symbol=w.text, start=start, duration=round(end - start, 3), score=score))
    sup.alignment = {**(sup.alignment or {}), "word": items}
    custom = dict(sup.custom or {})
    custom["label_source"] = {**(custom.get("label_source") or {}), "alignment": source}
    sup.custom = custom
    return cut
