"""Renderers and parsers for every target format of DESIGN section 4.

Every format we write we can read back: `parse_target(key, render_target(...))` returns what went
in. Transcripts and answers may not contain '<' or '>' (the tag delimiters); rendering one that
does is a FormatError rather than a target no parser can split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from osum_data.tasks.registry import Registry, registry


class FormatError(ValueError):
    """A target that cannot be rendered or parsed."""


@dataclass(frozen=True)
class Word:
    """One aligned token (a word, or a character for Chinese) with start/end in seconds."""

    text: str
    start: float
    end: float


@dataclass
class Parsed:
    """What a target holds. Fields a format does not carry stay None."""

    transcript: str | None = None
    labels: dict[str, str | list[str]] = field(default_factory=dict)
    words: list[Word] | None = None
    answer: str | None = None


def check_plain(text: str, what: str = "text") -> str:
    if "<" in text or ">" in text:
        raise FormatError(f"{what} contains '<' or '>': {text!r}")
    return text


def _fmt_time(t: float, res: float) -> str:
    steps = round(t / res)
    decimals = max(0, -int(f"{res:e}".split("e")[1]))
    return f"{steps * res:.{decimals}f}"


def render_timestamps(words: list[Word], resolution: float | None = None) -> str:
    res = resolution or registry().timestamp_resolution
    parts = []
    for w in words:
        check_plain(w.text, "aligned word")
        if not w.text or any(c.isspace() for c in w.text):
            raise FormatError(f"aligned word must be one non-empty token: {w.text!r}")
        parts.append(f"<{_fmt_time(w.start, res)}>{w.text}<{_fmt_time(w.end, res)}>")
    return " ".join(parts)


_WORD_SPAN = re.compile(r"<(\d+(?:\.\d+)?)>([^<>\s]+)<(\d+(?:\.\d+)?)>")


def parse_timestamps(text: str) -> list[Word]:
    words, pos = [], 0
    for m in _WORD_SPAN.finditer(text):
        if text[pos : m.start()].strip():
            raise FormatError(f"unexpected text {text[pos : m.start()]!r} in timestamp target")
        words.append(Word(m.group(2), float(m.group(1)), float(m.group(3))))
        pos = m.end()
    if text[pos:].strip():
        raise FormatError(f"unexpected text {text[pos:]!r} in timestamp target")
    return words


_TRAILING_TAGS = re.compile(r"((?:<[^<>]+>)+)$")
_TAG = re.compile(r"<[^<>]+>")


def render_labels(
    transcript: str | None,
    labels: dict[str, str | list[str]],
    fields: tuple[str, ...],
    reg: Registry | None = None,
    english_tags: bool = False,
) -> str:
    """Transcript followed by the tags of `fields` in order; transcript None gives the X-only form."""
    reg = reg or registry()
    tags = []
    for f in fields:
        if f not in labels or labels[f] in (None, "", []):
            raise FormatError(f"label {f!r} missing")
        values = labels[f] if isinstance(labels[f], list) else [labels[f]]
        tags += [reg.vocabulary(f).render(v, english_tags) for v in values]
    head = "" if transcript is None else check_plain(transcript, "transcript")
    return head + "".join(tags)


def parse_labels(text: str, fields: tuple[str, ...], x_only: bool, reg: Registry | None = None) -> Parsed:
    reg = reg or registry()
    m = _TRAILING_TAGS.search(text)
    if not m:
        raise FormatError(f"no label tags at the end of {text!r}")
    transcript = text[: m.start()]
    if x_only and transcript.strip():
        raise FormatError(f"X-only target has text before its tags: {text!r}")
    tags = _TAG.findall(m.group(1))
    labels: dict[str, str | list[str]] = {}
    if len(fields) == 1 and fields[0] == "events":
        labels["events"] = [reg.vocabulary("events").from_tag(t) for t in tags]
    else:
        if len(tags) != len(fields):
            raise FormatError(f"expected {len(fields)} tag(s) for {fields}, got {tags}")
        for f, t in zip(fields, tags, strict=True):
            labels[f] = reg.vocabulary(f).from_tag(t)
    return Parsed(transcript=None if x_only else transcript, labels=labels)


def render_chat(transcript: str | None, answer: str, reg: Registry | None = None) -> str:
    sep = (reg or registry()).chat_separator
    check_plain(answer, "answer")
    if transcript is None:
        return answer
    return check_plain(transcript, "transcript") + sep + answer


def parse_chat(text: str, x_only: bool, reg: Registry | None = None) -> Parsed:
    sep = (reg or registry()).chat_separator
    if x_only:
        return Parsed(answer=check_plain(text, "answer"))
    if text.count(sep) != 1:
        raise FormatError(f"chat target needs exactly one {sep!r}: {text!r}")
    transcript, answer = text.split(sep)
    return Parsed(transcript=check_plain(transcript), answer=check_plain(answer, "answer"))


def render_target(
    task_id: str,
    *,
    transcript: str | None = None,
    labels: dict[str, str | list[str]] | None = None,
    words: list[Word] | None = None,
    answer: str | None = None,
    x_only: bool = False,
    english_tags: bool = False,
) -> str:
    """Render the target text of one sample of `task_id` (x_only picks the tag-only variant)."""
    reg = registry()
    task = reg.task(task_id)
    if x_only and not task.x_only_key:
        raise FormatError(f"task {task_id} has no X-only form")
    if task.format == "transcript":
        if not transcript:
            raise FormatError("empty transcript")
        return check_plain(transcript, "transcript")
    if task.format == "timestamps":
        if not words:
            raise FormatError("no word alignment")
        return render_timestamps(words, reg.timestamp_resolution)
    if task.format == "labels":
        if not x_only and not transcript:
            raise FormatError("empty transcript")
        return render_labels(None if x_only else transcript, labels or {}, task.labels, reg, english_tags)
    if task.format == "chat":
        if not answer:
            raise FormatError("empty answer")
        if not x_only and not transcript:
            raise FormatError("empty transcript")
        return render_chat(None if x_only else transcript, answer, reg)
    raise FormatError(f"unknown format {task.format!r}")


def parse_target(key: str, text: str) -> Parsed:
    """Parse a target written under tag key `key` (the sample's `task` field)."""
    reg = registry()
    task, x_only = reg.task_for_key(key)
    if task.format == "transcript":
        return Parsed(transcript=check_plain(text, "transcript"))
    if task.format == "timestamps":
        words = parse_timestamps(text)
        return Parsed(transcript=" ".join(w.text for w in words), words=words)
    if task.format == "labels":
        return parse_labels(text, task.labels, x_only, reg)
    return parse_chat(text, x_only, reg)
