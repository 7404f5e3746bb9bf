"""Quality filters for text an LLM wrote (STTC answers, paraphrased instructions), as plain functions.

Each returns None when the text passes, or a short reason; `check_text` runs them all and returns the
first `(code, reason)`, ready for a `Reject`. The phrase lists are data (`filters.yaml`), in English
and Chinese. LTU's lesson: a refusal blocklist that misses phrasings keeps ~90% of what it should
drop, so the lists match on normalised text (NFKC, case-folded, straight quotes) and cover both
"I can't help" refusals and "cannot tell from the text" non-answers.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from osum_data.llm.language import language_mismatch

FILTERS_YAML = Path(__file__).with_name("filters.yaml")
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})


def fold(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    return re.sub(r"\s+", " ", text).strip().casefold()


def dedup_key(text: str) -> str:
    """What two texts must share to count as duplicates: letters and digits, case and punctuation aside."""
    return re.sub(r"[\W_]+", "", fold(text))


@cache
def _rules() -> dict[str, list[tuple[str, re.Pattern]]]:
    """category -> [(rule as written, compiled)]; phrases are folded like the text they match."""
    data = yaml.safe_load(FILTERS_YAML.read_text(encoding="utf-8"))
    rules: dict[str, list[tuple[str, re.Pattern]]] = {}
    for category, by_lang in data.items():
        compiled = []
        for lang, spec in by_lang.items():
            for phrase in spec.get("phrases") or []:
                body = re.escape(fold(phrase))
                compiled.append((phrase, re.compile(rf"(?<!\w){body}(?!\w)" if lang == "en" else body)))
            for pat in spec.get("patterns") or []:
                compiled.append((pat, re.compile(pat)))
        rules[category] = compiled
    return rules


def _match(category: str, text: str) -> str | None:
    """The matched span of the first rule of `category` that fires."""
    folded = fold(text)
    for _, pat in _rules()[category]:
        m = pat.search(folded)
        if m:
            return m.group(0)
    return None


def refusal(text: str) -> str | None:
    return _match("refusal", text)


def cannot_tell(text: str) -> str | None:
    return _match("cannot_tell", text)


def self_naming(text: str) -> str | None:
    return _match("self_naming", text)


def artifact(text: str) -> str | None:
    """Placeholders, markup and format talk: what a small model leaves in place of a spoken answer."""
    return _match("artifact", text)


def angle_brackets(text: str) -> str | None:
    """`<` and `>` break every target parser (tags are written with them)."""
    return "contains < or >" if ("<" in text or ">" in text or "＜" in text or "＞" in text) else None


def text_units(text: str) -> int:
    """Length in units that mean the same in Chinese and English: one per CJK character, one per word
    of other scripts."""
    han = sum(1 for ch in text if unicodedata.name(ch, "").startswith("CJK"))
    other = re.sub(r"[\u3400-\u9fff\uf900-\ufaff]", " ", text)
    return han + len(re.findall(r"\w+", other))


@dataclass(frozen=True)
class LengthBounds:
    min_units: int = 1
    max_units: int = 200


def length_problem(text: str, bounds: LengthBounds) -> str | None:
    n = text_units(text)
    if n < bounds.min_units:
        return f"too short ({n} < {bounds.min_units} units)"
    if n > bounds.max_units:
        return f"too long ({n} > {bounds.max_units} units)"
    return None


def _units(text: str) -> list[str]:
    """The text as units: one per CJK character, one per word of other scripts (case-folded)."""
    return re.findall(r"[\u3400-\u9fff\uf900-\ufaff]|[^\W\u3400-\u9fff\uf900-\ufaff]+", fold(text))


def _is_cjk(unit: str) -> bool:
    return len(unit) == 1 and ("\u3400" <= unit <= "\u9fff" or "\uf900" <= unit <= "\ufaff")


def echo(text: str, sources: list[str] | tuple[str, ...], n: int | None = None) -> str | None:
    """A run of `n` units of `text` copied from one of `sources` (the prompt, the question): small models
    parrot their instructions or the user's words instead of answering. `n` defaults to 6 words, or 10
    characters for Chinese text, where repeating a phrase of the question is ordinary."""
    units = _units(text)
    if n is None:
        n = 10 if sum(map(_is_cjk, units)) * 2 > len(units) else 6
    grams = {tuple(units[i : i + n]) for i in range(len(units) - n + 1)}
    for source in sources:
        su = _units(source)
        for i in range(len(su) - n + 1):
            if tuple(su[i : i + n]) in grams:
                return (
                    "".join(u if _is_cjk(u) else f" {u} " for u in su[i : i + n]).replace("  ", " ").strip()
                )
    return None


class Deduper:
    """Remembers texts (normalised by `dedup_key`); `seen(text)` says whether it was there already and
    records it if not. Seed it with an existing pool to reject copies of it too."""

    def __init__(self, existing: list[str] | tuple[str, ...] = ()):
        self._keys = {dedup_key(t) for t in existing}

    def seen(self, text: str) -> bool:
        key = dedup_key(text)
        if key in self._keys:
            return True
        self._keys.add(key)
        return False


def check_text(
    text: str,
    language: str | None = None,
    bounds: LengthBounds | None = None,
    deduper: Deduper | None = None,
    echo_of: list[str] | tuple[str, ...] = (),
) -> tuple[str, str] | None:
    """The first failed filter as `(code, reason)`, or None. `language` is the expected language
    (the question's); `echo_of` are texts the answer must not copy (see `echo`); the deduper is
    consulted last, so only passing texts are remembered."""
    checks = (
        ("angle_brackets", angle_brackets),
        ("refusal", refusal),
        ("cannot_tell", cannot_tell),
        ("self_naming", self_naming),
        ("artifact", artifact),
    )
    for code, fn in checks:
        hit = fn(text)
        if hit:
            return code, f"{code}: {hit!r} in {text!r}"
    copied = echo(text, echo_of) if echo_of else None
    if copied:
        return "echo", f"echo: {copied!r} copied from the prompt into {text!r}"
    if bounds is not None:
        problem = length_problem(text, bounds)
        if problem:
            return ("too_short" if problem.startswith("too short") else "too_long"), f"{problem}: {text!r}"
    mismatch = language_mismatch(text, language)
    if mismatch:
        return "wrong_language", f"{mismatch}: {text!r}"
    if deduper is not None and deduper.seen(text):
        return "duplicate", f"duplicate: {text!r}"
    return None
