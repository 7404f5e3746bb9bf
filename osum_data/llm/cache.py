"""Content-addressed cache of LLM answers: one JSON file per request key.

Why files and not sqlite: a pipeline runs as many Ray workers, possibly on several nodes that share the
cache over a network filesystem. sqlite's locking is unreliable on NFS and serialises every writer;
one file per key needs no lock at all. A writer puts the entry in a temporary file next to its final
place and renames it (atomic on POSIX), so a reader sees a whole entry or none, two writers of the same
key both write a whole entry (the same answer, or an equally valid one), and a killed process leaves at
most a stray `.tmp` file that is never read. Entries live under `ab/abcdef....json` so no directory
grows past a few thousand files per million keys; `find -mtime` prunes them.

The key is the SHA-256 of the canonical JSON of everything that decides the answer: model, messages,
sampling parameters, the output schema and the caller's template version. The endpoint URL is not in
it on purpose: the same model behind the Batch API, vLLM or a local server gives the same kind of answer,
and a run that moves between them must not pay twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from osum_data.llm.settings import redact_any

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


def request_key(
    model: str,
    messages: list[dict[str, Any]],
    params: dict[str, Any],
    schema: dict[str, Any] | None,
    template_version: str,
) -> str:
    """The content address of one request (64 hex chars; also its batch `custom_id`)."""
    material = {
        "format": CACHE_FORMAT,
        "model": model,
        "messages": messages,
        "params": {k: v for k, v in sorted(params.items()) if v is not None},
        "schema": schema,
        "template_version": str(template_version),
    }
    blob = json.dumps(material, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class AnswerCache:
    """Entries are dicts: {"status": "ok"|"rejected", "text": raw answer, "code", "reason", "usage"}."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self.path(key)
        try:
            with open(path, encoding="utf-8") as f:
                entry = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:  # cannot happen through put(); a hand-edited file
            log.warning("ignoring unreadable cache entry %s: %s", path, e)
            return None
        return entry if isinstance(entry, dict) and entry.get("key") == key else None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # The one door to the cache: whatever a caller or a server put in the entry (an answer that
        # echoes the request's Authorization header), the API key does not reach the disk.
        data = json.dumps({**redact_any(entry), "key": key}, ensure_ascii=False, sort_keys=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_reject(self, key: str, entry: dict[str, Any], still_valid: Callable[[str | None], bool]) -> bool:
        """Store a reject unless `key` already holds an ok answer that `still_valid(text)` accepts; False
        when the valid answer was kept. A verdict of "malformed" is only ever about one answer: a batch
        results file imported after a better one, or a worker that lost a race to another, must not
        throw away a good answer that cost a request. Get-then-put narrows the race to one file read
        and needs no lock (see the module docstring)."""
        current = self.get(key)
        if current is not None and current.get("status") == "ok" and still_valid(current.get("text")):
            return False
        self.put(key, entry)
        return True

    def __contains__(self, key: str) -> bool:
        return self.path(key).exists()
