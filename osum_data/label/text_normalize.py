"""Transcript normalisation for training targets (the `normalize_text` stage).

Targets are parsed by splitting on '<' and '>' (DESIGN section 4), so a transcript may never carry
them; encoding defects (a '?' standing for a lost accented letter, mojibake, U+FFFD) teach the model
garbage, so such transcripts are rejected rather than guessed at.
"""

from __future__ import annotations

import re
import unicodedata

from lhotse.cut import Cut

from osum_data.run.stage import Reject, per_cut_stage

_BRACKETS = {"[]": r"\[[^\[\]]*\]", "{}": r"\{[^{}]*\}", "()": r"\([^()]*\)", "**": r"\*[^*\s][^*]*\*"}
_ANGLE_MARKUP = re.compile(r"<[^<>]*>")
# '?' glued between two letters ("Jos?phine", "caf?s") is a lost non-ASCII letter, not a question.
_LOST_LETTER = re.compile(r"(?<=[^\W\d_])\?(?=[^\W\d_])")
# UTF-8 read as Latin-1/CP1252: 'Ã©', 'â€™', and the replacement character.
_MOJIBAKE = re.compile(r"[ÃÂ][\x80-\xbf\u00a0-\u00bf]|â€|\ufffd")
_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_SPACE_BETWEEN_CJK = re.compile(rf"(?<=[{_CJK}])\s+(?=[{_CJK}])")


def normalize_transcript(
    text: str,
    strip_brackets: tuple[str, ...] | list[str] = ("[]", "{}", "**"),
    angle_brackets: str = "reject",
    lowercase: bool = False,
    join_cjk: bool = True,
) -> str:
    """Return the normalised transcript or raise Reject with the reason."""
    if text is None:
        raise Reject("empty_transcript", "no transcript")
    out = unicodedata.normalize("NFKC", text)
    if _MOJIBAKE.search(out):
        raise Reject("encoding_defect", f"mojibake or replacement character in {text!r}")
    if _LOST_LETTER.search(out):
        raise Reject("encoding_defect", f"'?' inside a word (a lost accented letter?) in {text!r}")
    for kind in strip_brackets:
        if kind not in _BRACKETS:
            raise ValueError(f"strip_brackets: unknown bracket kind {kind!r}; use {list(_BRACKETS)}")
        out = re.sub(_BRACKETS[kind], " ", out)
    if "<" in out or ">" in out:
        if angle_brackets == "reject":
            raise Reject("angle_brackets", f"'<' or '>' in transcript {text!r}")
        if angle_brackets != "strip":
            raise ValueError(f"angle_brackets must be 'reject' or 'strip', got {angle_brackets!r}")
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


@per_cut_stage("normalize_text")
def normalize_text(
    cut: Cut,
    strip_brackets: list[str] = ("[]", "{}", "**"),
    angle_brackets: str = "reject",
    lowercase: bool = False,
    join_cjk: bool = True,
) -> Cut:
    """Normalise every supervision's text; the raw text is kept in custom.raw_text."""
    if not cut.supervisions:
        raise Reject("no_supervision", f"cut {cut.id} has no supervision")
    for sup in cut.supervisions:
        new = normalize_transcript(sup.text, tuple(strip_brackets), angle_brackets, lowercase, join_cjk)
        if new != sup.text:
            sup.custom = {**(sup.custom or {}), "raw_text": sup.text}
            sup.text = new
    return cut
