"""Renderers and parsers for every target format of DESIGN section 4.

Every format we write we can read back: `parse_target(key, render_target(...))` returns what went
in. Transcripts and answers may not contain '<' or '>' (the tag delimiters); rendering one that
does is a FormatError rather than a target no parser can split.

Label, chat and answer targets take an optional reasoning span (label chain-of-thought: EChat's
"dual thinking", C2SER), written between the registry's reasoning marks right before what it reasons
towards: `transcript<think>...</think><HAPPY>`, `<think>...</think><HAPPY>` (X-only),
`question<think>...</think><开始回答>answer`. The parser returns it as `Parsed.reasoning`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from osum_data.errors import UsageError
from osum_data.tasks.registry import Registry, registry


class FormatError(UsageError):
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
    reasoning: str | None = None


def check_plain(text: str, what: str = "text") -> str:
    if "<" in text or ">" in text:
        raise FormatError(f"{what} contains '<' or '>': {text!r}")
    return text


def _fmt_time(t: float, res: float) -> str:
    steps = round(t / res)
    decimals = max(0, -int(f"{res:e}".split("e")[1]))
    return f"{steps * res:.{decimals}f}"


def quantize_spans(
    spans: list[tuple[float, float]], resolution: float, duration: float | None = None
) -> list[tuple[int, int]]:
    """Word spans in whole steps of `resolution`, each at least one step long, in order and not
    overlapping (a word starts at or after the previous word's end), and not past `duration`.

    Rounding alone turns a 40 ms word into `<1.4>an<1.4>`. Rule: each boundary is rounded to the
    nearest step; a forward pass moves a start up to the previous end and an end up to one step
    after its start; if that runs past the last step of the audio, a backward pass pulls ends and
    starts back. Words are moved by at most the steps their neighbours need. A FormatError when
    the words cannot fit one step each."""
    q = [(round(a / resolution), round(b / resolution)) for a, b in spans]
    out: list[list[int]] = []
    prev = 0
    for a, b in q:
        a = max(a, prev, 0)
        b = max(b, a + 1)
        out.append([a, b])
        prev = b
    if duration is not None and out:
        last = max(1, round(duration / resolution))
        nxt = last
        for item in reversed(out):
            item[1] = min(item[1], nxt)
            item[0] = min(item[0], item[1] - 1)
            nxt = item[0]
        if out[0][0] < 0:
            raise FormatError(
                f"{len(out)} words do not fit {duration:.2f} s at one {resolution} s step each"
            )
    return [(a, b) for a, b in out]


def render_timestamps(
    words: list[Word], resolution: float | None = None, duration: float | None = None
) -> str:
    """`<start>word<end>` per word at `resolution` (quantize_spans: no zero-length or overlapping
    span after rounding; `duration`, the audio's length, bounds the last end)."""
    res = resolution or registry().timestamp_resolution
    for w in words:
        check_plain(w.text, "aligned word")
        if not w.text or any(c.isspace() for c in w.text):
            raise FormatError(f"aligned word must be one non-empty token: {w.text!r}")
    steps = quantize_spans([(w.start, w.end) for w in words], res, duration)
    parts = [
        f"<{_fmt_time(a * res, res)}>{w.text}<{_fmt_time(b * res, res)}>"
        for w, (a, b) in zip(words, steps, strict=True)
    ]
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


def reasoning_span(reasoning: str | None, reg: Registry | None = None) -> str:
    """The reasoning text between the reasoning marks ('' for None)."""
    if reasoning is None:
        return ""
    if not reasoning.strip():
        raise FormatError("empty reasoning")
    opening, closing = (reg or registry()).reasoning_marks
    return opening + check_plain(reasoning, "reasoning") + closing


def split_reasoning(text: str, reg: Registry | None = None) -> tuple[str | None, int, int]:
    """(reasoning, start, end) of the one reasoning span in `text`, or (None, -1, -1) without one.
    Marks are matched case-insensitively (OSUM lowercases targets)."""
    opening, closing = (reg or registry()).reasoning_marks
    folded = text.casefold()
    start = folded.find(opening.casefold())
    if start < 0:
        if closing.casefold() in folded:
            raise FormatError(f"{closing!r} without {opening!r} in {text!r}")
        return None, -1, -1
    body = start + len(opening)
    stop = folded.find(closing.casefold(), body)
    if stop < 0:
        raise FormatError(f"{opening!r} without {closing!r} in {text!r}")
    if opening.casefold() in folded[body:]:
        raise FormatError(f"more than one reasoning span in {text!r}")
    reasoning = text[body:stop]
    if not reasoning.strip():
        raise FormatError(f"empty reasoning span in {text!r}")
    return check_plain(reasoning, "reasoning"), start, stop + len(closing)


def render_labels(
    transcript: str | None,
    labels: dict[str, str | list[str]],
    fields: tuple[str, ...],
    reg: Registry | None = None,
    english_tags: bool = False,
    reasoning: str | None = None,
) -> str:
    """Transcript followed by the tags of `fields` in order; transcript None gives the X-only form;
    a reasoning span goes between them."""
    reg = reg or registry()
    tags = []
    for f in fields:
        if f not in labels or labels[f] in (None, "", []):
            raise FormatError(f"label {f!r} missing")
        values = labels[f] if isinstance(labels[f], list) else [labels[f]]
        tags += [reg.vocabulary(f).render(v, english_tags) for v in values]
    head = "" if transcript is None else check_plain(transcript, "transcript")
    return head + reasoning_span(reasoning, reg) + "".join(tags)


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


def render_chat(
    transcript: str | None, answer: str, reg: Registry | None = None, reasoning: str | None = None
) -> str:
    sep = (reg or registry()).chat_separator
    check_plain(answer, "answer")
    span = reasoning_span(reasoning, reg)
    if transcript is None:
        return span + answer
    return check_plain(transcript, "transcript") + span + sep + answer


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
    reasoning: str | None = None,
    duration: float | None = None,
) -> str:
    """Render the target text of one sample of `task_id` (x_only picks the tag-only variant;
    `reasoning` adds a reasoning span to label, chat and answer targets; `duration`, the audio's
    length, bounds word timestamps)."""
    reg = registry()
    task = reg.task(task_id)
    if x_only and not task.x_only_key:
        raise FormatError(f"task {task_id} has no X-only form")
    if reasoning is not None and task.format in ("transcript", "timestamps"):
        raise FormatError(f"task {task_id} ({task.format}) takes no reasoning span")
    if task.format == "transcript":
        if not transcript:
            raise FormatError("empty transcript")
        return check_plain(transcript, "transcript")
    if task.format == "timestamps":
        if not words:
            raise FormatError("no word alignment")
        return render_timestamps(words, reg.timestamp_resolution, duration)
    if task.format == "labels":
        if not x_only and not transcript:
            raise FormatError("empty transcript")
        return render_labels(
            None if x_only else transcript, labels or {}, task.labels, reg, english_tags, reasoning
        )
    if task.format == "chat":
        if not answer:
            raise FormatError("empty answer")
        if not x_only and not transcript:
            raise FormatError("empty transcript")
        return render_chat(None if x_only else transcript, answer, reg, reasoning)
    if task.format == "answer":
        if not answer or not answer.strip():
            raise FormatError("empty answer")
        return reasoning_span(reasoning, reg) + check_plain(answer, "answer")
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
    reasoning, start, end = split_reasoning(text, reg)
    if reasoning is not None:
        _check_reasoning_place(task.format, x_only, text, start, end, reg)
        text = text[:start] + text[end:]
    if task.format == "labels":
        parsed = parse_labels(text, task.labels, x_only, reg)
    elif task.format == "answer":
        parsed = Parsed(answer=check_plain(text, "answer"))
    else:
        parsed = parse_chat(text, x_only, reg)
    parsed.reasoning = reasoning
    return parsed


def insert_reasoning(key: str, text: str, reasoning: str) -> str:
    """`text` (a target written under `key`) with a reasoning span put where the parser expects it;
    the result is checked by parsing it back."""
    reg = registry()
    task, x_only = reg.task_for_key(key)
    if task.format not in ("labels", "chat", "answer"):
        raise FormatError(f"{key} ({task.format}) takes no reasoning span")
    if split_reasoning(text, reg)[0] is not None:
        raise FormatError(f"target already has a reasoning span: {text!r}")
    span = reasoning_span(reasoning, reg)
    if task.format == "labels":
        m = _TRAILING_TAGS.search(text)
        if not m:
            raise FormatError(f"no label tags at the end of {text!r}")
        at = m.start()
    elif task.format == "chat" and not x_only:
        at = text.find(reg.chat_separator)
        if at < 0:
            raise FormatError(f"chat target without {reg.chat_separator!r}: {text!r}")
    else:
        at = 0
    out = text[:at] + span + text[at:]
    before, after = parse_target(key, text), parse_target(key, out)
    if (after.labels, after.answer, after.transcript) != (before.labels, before.answer, before.transcript):
        raise FormatError(f"reasoning span changed what {text!r} says")
    return out


def _check_reasoning_place(fmt: str, x_only: bool, text: str, start: int, end: int, reg: Registry) -> None:
    """The span must sit right before what it leads to: the tags, the chat separator, the answer."""
    after = text[end:]
    if fmt == "labels":
        ok = bool(re.fullmatch(r"(?:<[^<>]+>)+", after))
    elif fmt == "chat" and not x_only:
        ok = after.startswith(reg.chat_separator)
    else:
        ok = start == 0
    if not ok:
        raise FormatError(f"reasoning span out of place in {text!r}")
