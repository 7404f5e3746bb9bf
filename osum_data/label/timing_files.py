"""Readers of the timing files other tools write: CTM and Praat TextGrid (word alignments), RTTM
(speaker turns) and STM (timed transcripts).

Each reader returns plain records keyed by the file/utterance id the format carries, and stops at
the first malformed line with a `TimingFileError` naming the file, the line number and what is
wrong (a half-read alignment file would silently mis-time everything after the bad line).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from osum_data.errors import UsageError


class TimingFileError(UsageError):
    """A timing file that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class TimedWord:
    word: str
    start: float
    end: float
    score: float | None = None


@dataclass(frozen=True)
class Turn:
    """A stretch of one recording: an RTTM speaker turn or an STM segment (with its text)."""

    start: float
    end: float
    speaker: str | None = None
    text: str | None = None
    channel: str | None = None
    labels: tuple[str, ...] = field(default_factory=tuple)


def _lines(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise TimingFileError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
    for row, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith(";;") or stripped.startswith("#"):
            continue
        yield row, stripped


def _time(value: str, what: str, where: str) -> float:
    try:
        t = float(value)
    except ValueError:
        raise TimingFileError(f"{where}: {what} {value!r} is not a number") from None
    if not math.isfinite(t) or t < 0:
        raise TimingFileError(f"{where}: {what} {value!r} must be a finite number >= 0")
    return t


def read_ctm(path: str | Path) -> dict[str, list[TimedWord]]:
    """CTM: `<utterance or file id> <channel> <start> <duration> <word> [<confidence>]` per line
    (`;;` comments). Words of an id come back sorted by start time."""
    path = Path(path)
    out: dict[str, list[TimedWord]] = {}
    for row, line in _lines(path):
        where = f"{path}:{row}"
        f = line.split()
        if len(f) not in (5, 6):
            raise TimingFileError(
                f"{where}: expected 5 or 6 fields (id channel start duration word [conf]), got {len(f)}"
            )
        start, dur = _time(f[2], "start", where), _time(f[3], "duration", where)
        score = None
        if len(f) == 6:
            try:
                score = float(f[5])
            except ValueError:
                raise TimingFileError(f"{where}: confidence {f[5]!r} is not a number") from None
        out.setdefault(f[0], []).append(TimedWord(f[4], start, start + dur, score))
    for words in out.values():
        words.sort(key=lambda w: w.start)
    return out


def read_rttm(path: str | Path) -> dict[str, list[Turn]]:
    """RTTM speaker turns: `SPEAKER <file> <channel> <onset> <duration> <NA> <NA> <speaker> <NA> <NA>`
    (other record types such as SPKR-INFO are skipped)."""
    path = Path(path)
    out: dict[str, list[Turn]] = {}
    for row, line in _lines(path):
        where = f"{path}:{row}"
        f = line.split()
        if f[0] != "SPEAKER":
            if f[0].isupper() and "-" in f[0] or f[0] in ("LEXEME", "NON-SPEECH", "NON-LEX", "SEGMENT"):
                continue
            raise TimingFileError(f"{where}: unknown record type {f[0]!r} (expected SPEAKER)")
        if len(f) < 8:
            raise TimingFileError(f"{where}: a SPEAKER line needs at least 8 fields, got {len(f)}")
        onset, dur = _time(f[3], "onset", where), _time(f[4], "duration", where)
        out.setdefault(f[1], []).append(Turn(onset, onset + dur, speaker=f[7], channel=f[2]))
    for turns in out.values():
        turns.sort(key=lambda t: t.start)
    return out


_STM_LABELS = re.compile(r"^<([^<>]*)>$")


def read_stm(path: str | Path) -> dict[str, list[Turn]]:
    """STM: `<file> <channel> <speaker> <begin> <end> [<label,...>] transcript...` per line. Segments
    whose transcript is `IGNORE_TIME_SEGMENT_IN_SCORING` are left out."""
    path = Path(path)
    out: dict[str, list[Turn]] = {}
    for row, line in _lines(path):
        where = f"{path}:{row}"
        f = line.split(maxsplit=5)
        if len(f) < 5:
            raise TimingFileError(
                f"{where}: expected at least 5 fields (file channel speaker begin end), got {len(f)}"
            )
        begin, end = _time(f[3], "begin", where), _time(f[4], "end", where)
        if end < begin:
            raise TimingFileError(f"{where}: end {end} is before begin {begin}")
        rest = f[5] if len(f) > 5 else ""
        labels: tuple[str, ...] = ()
        head, _, tail = rest.partition(" ")
        m = _STM_LABELS.match(head)
        if m:
            labels, rest = tuple(x for x in m.group(1).split(",") if x), tail
        text = rest.strip()
        if text == "IGNORE_TIME_SEGMENT_IN_SCORING":
            continue
        out.setdefault(f[0], []).append(
            Turn(begin, end, speaker=f[2], text=text, channel=f[1], labels=labels)
        )
    for turns in out.values():
        turns.sort(key=lambda t: t.start)
    return out


# --- Praat TextGrid ------------------------------------------------------------------------------

# Praat reads a text TextGrid as a stream of values (numbers, quoted strings, <flags>) and skips
# everything else ("xmin =", "item [1]:"); that reading covers the long and the short format alike.
_TG_TOKEN = re.compile(r'"((?:[^"]|"")*)"|(<[a-z]+>)|(\[[^\]]*\])|(-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)|(\S+)')


def _tg_values(text: str, path: Path) -> list[tuple[str | float, int]]:
    values, line = [], 1
    pos = 0
    for m in _TG_TOKEN.finditer(text):
        line += text.count("\n", pos, m.start())
        pos = m.start()
        if m.group(1) is not None:
            values.append((m.group(1).replace('""', '"'), line))
        elif m.group(2) is not None:
            values.append((m.group(2), line))
        elif m.group(4) is not None:
            values.append((float(m.group(4)), line))
    if text.count('"') % 2:
        raise TimingFileError(f"{path}: unbalanced quote (a string is never closed)")
    return values


def read_textgrid(path: str | Path) -> dict[str, list[TimedWord]]:
    """Interval tiers of a text TextGrid (long or short format, UTF-8 or UTF-16): tier name ->
    non-empty intervals. Point tiers are skipped."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-16") if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise TimingFileError(f"{path}: not UTF-8 or UTF-16 ({e.reason})") from None
    values = _tg_values(text, path)
    it = iter(values)

    def take(kind: type, what: str):
        try:
            v, line = next(it)
        except StopIteration:
            raise TimingFileError(f"{path}: file ends while reading {what}") from None
        if kind is float and isinstance(v, str) or kind is str and not isinstance(v, str):
            raise TimingFileError(f"{path}:{line}: expected {what}, got {v!r}")
        return v, line

    header, _ = take(str, '"ooTextFile"')
    kind, _ = take(str, '"TextGrid"')
    if header != "ooTextFile" or kind != "TextGrid":
        raise TimingFileError(f"{path}: not a text TextGrid (header {header!r} {kind!r})")
    take(float, "xmin")
    take(float, "xmax")
    flag, line = take(str, "<exists>")
    if flag != "<exists>":
        return {}
    n_tiers, _ = take(float, "the tier count")
    tiers: dict[str, list[TimedWord]] = {}
    for _ in range(int(n_tiers)):
        tier_class, line = take(str, "a tier class")
        name, _ = take(str, "a tier name")
        take(float, "tier xmin")
        take(float, "tier xmax")
        count, _ = take(float, "the interval count")
        items = []
        for _ in range(int(count)):
            if tier_class == "IntervalTier":
                start, line = take(float, "an interval start")
                end, _ = take(float, "an interval end")
                label, _ = take(str, "an interval label")
                if end < start:
                    raise TimingFileError(f"{path}:{line}: interval end {end} is before its start {start}")
                if label.strip():
                    items.append(TimedWord(label.strip(), start, end))
            elif tier_class == "TextTier":
                take(float, "a point time")
                take(str, "a point mark")
            else:
                raise TimingFileError(f"{path}:{line}: unknown tier class {tier_class!r}")
        if tier_class == "IntervalTier":
            tiers[name] = items
    return tiers
