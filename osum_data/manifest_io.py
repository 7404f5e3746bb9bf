"""Deterministic, atomic writing of JSON-lines manifests (`*.jsonl.gz`).

Every manifest we write goes through here so that the same content gives the same bytes (gzip
header mtime fixed at 0, sorted-free but stable key order) and a killed process never leaves a
half-written file under the final name (temp file + rename).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from osum_data.errors import OsumError


def dumps(item: dict[str, Any]) -> str:
    return json.dumps(item, ensure_ascii=False, separators=(", ", ": "))


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def open_jsonl_writer(path: str | Path) -> Iterator[IO[str]]:
    """Text handle writing gzip (for .gz names) or plain JSON lines, atomically."""
    with atomic_path(path) as tmp:
        if str(path).endswith(".gz"):
            with open(tmp, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz:
                with open_text(gz) as f:
                    yield f
        else:
            with open(tmp, "w", encoding="utf-8") as f:
                yield f


@contextmanager
def open_text(binary: IO[bytes]) -> Iterator[IO[str]]:
    import io

    wrapper = io.TextIOWrapper(binary, encoding="utf-8", newline="\n")
    try:
        yield wrapper
    finally:
        wrapper.flush()
        wrapper.detach()


def write_jsonl(path: str | Path, items: Iterable[dict[str, Any]]) -> int:
    """Write dicts as JSON lines; returns how many were written."""
    n = 0
    with open_jsonl_writer(path) as f:
        for item in items:
            f.write(dumps(item) + "\n")
            n += 1
    return n


def open_manifest(path: str | Path, mode: str = "rb") -> IO[Any]:
    """The one opener for manifests and other line files: gzip when the name ends in .gz, plain
    otherwise (binary by default; "rt" gives UTF-8 text)."""
    if str(path).endswith(".gz"):
        return gzip.open(path, mode, encoding="utf-8") if "t" in mode else gzip.open(path, mode)
    return open(path, mode, encoding="utf-8") if "t" in mode else open(path, mode)


def read_lines(path: str | Path, what: str = "manifest") -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw line) of the non-blank lines; a truncated or corrupt gzip file is
    a ManifestReadError (exit code 1) naming the file and the last good line."""
    import zlib

    number = 0
    try:
        with open_manifest(path, "rb") as f:
            for number, line in enumerate(f, 1):  # noqa: B007 (read after the loop)
                if line.strip():
                    yield number, line
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        kind = "truncated" if isinstance(e, EOFError) else "not a readable gzip file"
        raise ManifestReadError(
            f"{what} {path} is {kind} (after line {number}): {e}; re-create or re-download it"
        ) from None


class ManifestReadError(OsumError):
    """A manifest file that cannot be read to its end."""


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Stream dicts from a JSON-lines file (gzip or plain). A line nested too deeply raises
    JSONTooDeep (a json.JSONDecodeError) naming the file and line."""
    with open_manifest(path, "rt") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield loads_line(line)
                except JSONTooDeep as e:
                    raise JSONTooDeep(f"{path}:{number}: {e.msg}", e.doc, e.pos) from None


# No cut, reject or sample we read nests deeper than a dozen levels; a line nested hundreds deep
# would make json (and lhotse, Ray's pickling, our writers) recurse until RecursionError, which
# is no error of one line but kills the run. Such a line is refused before it is parsed.
MAX_JSON_DEPTH = 64
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


class JSONTooDeep(json.JSONDecodeError):
    """A JSON line nested deeper than MAX_JSON_DEPTH (a JSONDecodeError, so callers that reject
    bad JSON reject it too; `code` says which)."""

    code = "too_deep"


def json_depth(text: str | bytes) -> int:
    """How deep arrays and objects nest in a JSON text (strings ignored), without parsing it; a text
    with at most MAX_JSON_DEPTH brackets gets its bracket count (a bound: it cannot nest deeper)."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return min(raw.count(b"[") + raw.count(b"{"), MAX_JSON_DEPTH)  # cannot be deeper than that
    import numpy as np

    bare = np.frombuffer(_JSON_STRING.sub(b"", raw), dtype=np.uint8)
    step = (np.isin(bare, (ord("["), ord("{")))).astype(np.int64) - np.isin(bare, (ord("]"), ord("}")))
    return int(np.cumsum(step).max(initial=0))


def loads_line(text: str | bytes) -> Any:
    """json.loads of one manifest line, refusing one nested deeper than MAX_JSON_DEPTH."""
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        doc = text if isinstance(text, str) else text.decode("utf-8", "replace")
        raise JSONTooDeep(f"nested {depth} levels deep (at most {MAX_JSON_DEPTH})", doc[:200], 0)
    return json.loads(text)


def reject_record(cut_dict: dict[str, Any], stage: str, reason: str) -> dict[str, Any]:
    """A rejected cut as a loadable cut dict whose `custom.reject` says which stage and why."""
    out = dict(cut_dict)
    custom = dict(out.get("custom") or {})
    custom["reject"] = {"stage": stage, "reason": reason}
    out["custom"] = custom
    return out


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
MAX_NAME = 150


def safe_file_name(key: str) -> str:
    """A file (or tar member) name for a cut id. Ids may hold '/', '..', spaces or non-ASCII;
    whenever the id had to be changed (or shortened), a hash of it is appended, so distinct ids
    never share a name and no name can leave its directory."""
    name = _UNSAFE.sub("_", key).lstrip(".")
    if name != key or len(name) > MAX_NAME:
        name = f"{name[:MAX_NAME]}-{hashlib.sha1(key.encode('utf-8')).hexdigest()[:10]}"
    return name
