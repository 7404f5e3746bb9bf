"""Reading a run's input manifest in the driver: a checking pre-pass, then shards.

The pre-pass reads the whole file once before Ray starts, so a truncated `.gz` or an unreadable
file is reported with its name before any work, and it finds duplicate cut ids without holding the
ids: it keeps one 64-bit hash per line (8 bytes per cut) and remembers exact ids only for the few
hashes seen twice. The second pass cuts the lines into shards; the second and later lines with an
id already seen are flagged, to be rejected naming the first line.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import zlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from osum_data.errors import OsumError, UsageError
from osum_data.manifest_io import loads_line, open_manifest
from osum_data.run.shard import ShardInput

# lhotse writes "id" first; the fast path reads it without parsing the whole line.
_ID_FIRST = re.compile(r'\{\s*"id"\s*:\s*"((?:[^"\\]|\\.)*)"')


class InputError(OsumError):
    """The input manifest cannot be read (truncated, not gzip)."""


class InputMissing(UsageError, InputError):
    """The input manifest named on the command line is not there (a usage error)."""


@dataclass
class InputScan:
    path: Path
    lines: int  # non-blank lines: the run's `in`
    digest: str  # of the whole content: identifies the input of a run
    duplicate_hashes: set[int]


def _id_of(line: bytes) -> str | None:
    text = line.decode("utf-8", errors="replace")
    m = _ID_FIRST.match(text)
    if m:
        return json.loads(f'"{m.group(1)}"')
    try:
        d = loads_line(text)  # a line nested too deep is no cut: the shard rejects it (too_deep)
    except json.JSONDecodeError:
        return None
    cut_id = d.get("id") if isinstance(d, dict) else None
    return cut_id if isinstance(cut_id, str) else None


def _id_hash(cut_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(cut_id.encode(), digest_size=8).digest(), "little")


def _raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line bytes) of non-blank lines; InputError names a broken file."""
    number = 0
    try:
        with open_manifest(path) as f:
            for number, line in enumerate(f, 1):  # noqa: B007 (number is read after the loop)
                if line.strip():
                    yield number, line.rstrip(b"\r\n")
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise InputMissing(f"input manifest not found: {path}") from None
        what = "truncated" if isinstance(e, EOFError) else "not a readable gzip file"
        raise InputError(
            f"input manifest {path} is {what} (after line {number}): {e}; re-create or re-download it"
        ) from None


def scan(path: Path) -> InputScan:
    """Count lines, digest the content and find ids that occur more than once."""
    path = Path(path)
    if not path.exists():
        raise InputMissing(f"input manifest not found: {path}")
    if path.is_dir():
        raise InputMissing(f"input manifest {path} is a directory; give its cuts.jsonl.gz")
    digest = hashlib.sha256()
    hashes = array("Q")
    n = 0
    for _, line in _raw_lines(path):
        n += 1
        digest.update(line + b"\n")
        cut_id = _id_of(line)
        if cut_id is not None:
            hashes.append(_id_hash(cut_id))
    values, counts = np.unique(np.frombuffer(hashes, dtype=np.uint64), return_counts=True)
    dups = {int(v) for v in values[counts > 1]}
    return InputScan(path=path, lines=n, digest=digest.hexdigest()[:16], duplicate_hashes=dups)


def shard_hash(config_hash: str, lines: list[str], pre_rejects: dict[int, tuple[str, str]]) -> str:
    """Covers the config, the shard's exact lines and what the driver flagged in them (a
    duplicate's status depends on earlier shards)."""
    h = hashlib.sha256(config_hash.encode())
    for line in lines:
        h.update(line.encode())
        h.update(b"\n")
    if pre_rejects:
        h.update(json.dumps(sorted(pre_rejects.items())).encode())
    return h.hexdigest()[:24]


def iter_shards(scanned: InputScan, shard_size: int, config_hash: str) -> Iterator[ShardInput]:
    """ShardInputs in order; the i-th holds input lines [i*size, (i+1)*size)."""
    first_line: dict[str, int] = {}
    lines: list[str] = []
    numbers: list[int] = []
    pre: dict[int, tuple[str, str]] = {}
    index = 0
    for number, raw in _raw_lines(scanned.path):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw.decode("utf-8", errors="replace")
            pre[len(lines)] = ("not_utf8", f"input line {number}: not UTF-8 ({e.reason} at byte {e.start})")
        if scanned.duplicate_hashes and len(lines) not in pre:
            cut_id = _id_of(raw)
            if cut_id is not None and _id_hash(cut_id) in scanned.duplicate_hashes:
                if cut_id in first_line:
                    pre[len(lines)] = (
                        "duplicate_id",
                        f"duplicate cut id {cut_id!r} (first at input line {first_line[cut_id]})",
                    )
                else:
                    first_line[cut_id] = number
        lines.append(line)
        numbers.append(number)
        if len(lines) == shard_size:
            yield ShardInput(index, shard_hash(config_hash, lines, pre), lines, numbers, pre)
            index, lines, numbers, pre = index + 1, [], [], {}
    if lines:
        yield ShardInput(index, shard_hash(config_hash, lines, pre), lines, numbers, pre)
