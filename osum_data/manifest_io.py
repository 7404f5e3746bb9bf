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


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Stream dicts from a JSON-lines file (gzip or plain)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


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
