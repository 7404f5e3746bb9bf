"""Transcript normalisation for training targets (the `normalize_text` stage).

Targets are parsed by splitting on '<' and '>' (DESIGN section 4), so a transcript may never carry
them; encoding defects (a '?' standing for a lost accented letter, mojibake, U+FFFD) teach the model
garbage, so such transcripts are rejected rather than guessed at.

The rules are language-aware (`supervision.language`, else the script of the text; facts in
`text_rules.yaml`): what is a defect in Italian ("la citt? di Roma") is ordinary punctuation in
Chinese ("你去哪？我在家。"), whose full-width punctuation is kept as written.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from lhotse.cut import Cut

from osum_data.run.stage import Reject, per_cut_stage

BracketKind = Literal["[]", "{}", "()", "**"]
# Each kind strips its ASCII and its full-width/CJK forms (【噪音】, （笑）).
_BRACKETS = {
    "[]": r"\[[^\[\]]*\]|【[^【】]*】|［[^［］]*］",
    "{}": r"\{[^{}]*\}|｛[^｛｝]*｝",
    "()": r"\([^()]*\)|（[^（）]*）",
    "**": r"\*[^*\s][^*]*\*",
}
_ANGLE_MARKUP = re.compile(r"<[^<>]*>")
# UTF-8 read as Latin-1/CP1252: 'Ã©', 'â€™', and the replacement character.
_MOJIBAKE = re.compile(r"[ÃÂ][\x80-\xbf\u00a0-\u00bf]|â€|\ufffd")
_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_CJK_CHAR = re.compile(f"[{_CJK}]")
_SPACE_BETWEEN_CJK = re.compile(rf"(?<=[{_CJK}])\s+(?=[{_CJK}])")
_LETTER = r"[^\W\d_]"
# '?' glued between two letters ("Jos?phine", "caf?s"): a lost non-ASCII letter, never a question.
_QMARK_INSIDE_WORD = re.compile(rf"(?<={_LETTER})\?(?={_LETTER})")
# '?' right after a letter, then a lowercase word: a lost word-final letter ("citt? di").
_QMARK_BEFORE_LOWER = re.compile(rf"(?<={_LETTER})\?(?=\s+[^\W\d_])")


@dataclass(frozen=True)
class TextRules:
    cjk: frozenset[str]
    latin: frozenset[str]
    final_accents: frozenset[str]
    inverted_question: frozenset[str]
    zero_width: str
    joiners: str
    joiners_are_spelling: frozenset[str]
    cjk_punctuation: str


@cache
def text_rules() -> TextRules:
    data = yaml.safe_load((Path(__file__).parent / "text_rules.yaml").read_text(encoding="utf-8"))
    return TextRules(
        cjk=frozenset(data["cjk"]),
        latin=frozenset(data["latin"]),
        final_accents=frozenset(data["final_accents"]),
        inverted_question=frozenset(data["inverted_question"]),
        zero_width="".join(data["zero_width"]),
        joiners="".join(data["joiners"]),
        joiners_are_spelling=frozenset(data["joiners_are_spelling"]),
        cjk_punctuation=data["cjk_punctuation"],
    )


def base_language(language: str | None) -> str:
    """'zh-CN' -> 'zh', 'pt_BR' -> 'pt', None -> ''."""
    return re.split(r"[-_]", (language or "").strip().lower())[0]


def script_of(text: str, language: str | None) -> Literal["cjk", "latin", "other"]:
    """The writing system whose rules apply: from the language when known, else from the text."""
    rules, lang = text_rules(), base_language(language)
    if lang in rules.cjk:
        return "cjk"
    if lang in rules.latin:
        return "latin"
    if lang:
        return "other"
    if _CJK_CHAR.search(text):
        return "cjk"
    letters = [c for c in text if c.isalpha()]
    latin = sum(1 for c in letters if unicodedata.name(c, "").startswith("LATIN"))
    return "latin" if letters and latin / len(letters) >= 0.8 else "other"


def _nfkc_keeping(text: str, keep: str) -> str:
    """NFKC everywhere except on the characters in `keep` (runs of them stay as written)."""
    if not keep:
        return unicodedata.normalize("NFKC", text)
    parts = re.split(f"([{re.escape(keep)}]+)", text)
    return "".join(p if i % 2 else unicodedata.normalize("NFKC", p) for i, p in enumerate(parts))


def _remove_zero_width(text: str, language: str | None) -> str:
    rules = text_rules()
    drop = rules.zero_width + ("" if base_language(language) in rules.joiners_are_spelling else rules.joiners)
    return text.translate({ord(c): None for c in drop})


def _closes_inverted_question(text: str, pos: int) -> bool:
    """Whether the '?' at `pos` closes a '¿' opened earlier in the same sentence."""
    before = text[:pos]
    return before.rfind("¿") > max(before.rfind("?"), before.rfind("."), before.rfind("!"))


def lost_letter(text: str, language: str | None) -> str | None:
    """Describe a '?' that stands for a lost letter, or None. CJK text never has one."""
    script = script_of(text, language)
    if script == "cjk":
        return None
    m = _QMARK_INSIDE_WORD.search(text)
    if m:
        return f"'?' inside a word at {m.start()} (a lost accented letter?)"
    lang = base_language(language)
    # Word-final accented letters are common in some languages (perché, città, café); there the
    # rule applies whatever the case. A Latin text of unknown language gets it only when cased.
    # In English or German a '?' before a lowercase word is a question, not a lost letter.
    if lang in text_rules().final_accents or (
        not lang and script == "latin" and any(c.isupper() for c in text)
    ):
        inverted = lang in text_rules().inverted_question
        for m in _QMARK_BEFORE_LOWER.finditer(text):
            nxt = text[m.end() :].lstrip()[:1]
            if nxt.islower() and not (inverted and _closes_inverted_question(text, m.start())):
                return (
                    f"'?' after a letter and before a lowercase word at {m.start()} (a lost accented letter?)"
                )
    return None


def normalize_transcript(
    text: str | None,
    language: str | None = None,
    strip_brackets: tuple[str, ...] | list[str] = ("[]", "{}", "**"),
    angle_brackets: str = "reject",
    lowercase: bool = False,
    join_cjk: bool = True,
) -> str:
    """Return the normalised transcript or raise Reject with the reason."""
    if text is None:
        raise Reject("empty_transcript", "no transcript")
    if not isinstance(text, str):
        raise Reject("empty_transcript", f"transcript is a {type(text).__name__}, not text: {text!r}")
    out = _remove_zero_width(text, language)
    script = script_of(out, language)
    out = _nfkc_keeping(out, text_rules().cjk_punctuation if script == "cjk" else "")
    if _MOJIBAKE.search(out):
        raise Reject("encoding_defect", f"mojibake or replacement character in {text!r}")
    defect = lost_letter(out, language)
    if defect:
        raise Reject("encoding_defect", f"{defect} in {text!r}")
    for kind in strip_brackets:
        out = re.sub(_BRACKETS[kind], " ", out)
    if "<" in out or ">" in out:
        if angle_brackets == "reject":
            raise Reject("angle_brackets", f"'<' or '>' in transcript {text!r}")
        out = _ANGLE_MARKUP.sub(" ", out).replace("<", " ").replace(">", " ")
    out = re.sub(r"\s+", " ", "".join(c for c in out if unicodedata.category(c) != "Cc" or c.isspace()))
    out = out.strip()
    if join_cjk:
        out = _SPACE_BETWEEN_CJK.sub("", out)
    if lowercase:
        out = out.lower()
    if not out or not any(c.isalnum() for c in out):
        raise Reject("empty_transcript", f"nothing left of {text!r} after normalisation")
    return out


@per_cut_stage("normalize_text", version=2)
def normalize_text(
    cut: Cut,
    strip_brackets: list[BracketKind] = ("[]", "{}", "**"),
    angle_brackets: Literal["reject", "strip"] = "reject",
    lowercase: bool = False,
    join_cjk: bool = True,
    untranscribed: Literal["reject", "keep"] = "reject",
) -> Cut:
    """Normalise every supervision's text by its language's rules; the raw text is kept in
    custom.raw_text. `untranscribed: keep` lets a supervision without any text through unchanged
    (event clips, VoxCeleb: label-only cuts that the template renders X-only)."""
    if not cut.supervisions:
        raise Reject("no_supervision", f"cut {cut.id} has no supervision")
    for sup in cut.supervisions:
        if untranscribed == "keep" and not (sup.text or "").strip():
            continue
        new = normalize_transcript(
            sup.text, sup.language, tuple(strip_brackets), angle_brackets, lowercase, join_cjk
        )
        if new != sup.text:
            sup.custom = {**(sup.custom or {}), "raw_text": sup.text}
            sup.text = new
    return cut
