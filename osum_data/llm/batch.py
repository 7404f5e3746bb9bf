"""OpenAI batch JSONL: collect requests during a run, export one upload-ready file, import the results.

The workflow, for runs too big or too cheap-minded for online requests:

1. Run with `--set llm.batch_dir=DIR`: every request the cache cannot answer is appended to
   `DIR/pending-<host>-<pid>-<rand>.jsonl` (one file per client, so concurrent Ray workers never share
   a file) and its cut is rejected as `batch_pending`.
2. `osum-data llm batch-export DIR --out batch.jsonl` merges them (deduplicated, minus what the cache
   holds by now) into `batch.jsonl` — lines of `{custom_id, method, url, body}`, which the OpenAI
   Batch API and `vllm run-batch` both read — plus `batch.jsonl.osum.json`, which names the pydantic
   model that validates each answer.
3. `osum-data llm batch-import results.jsonl --requests batch.jsonl` validates each answer with that
   model and stores it in the cache exactly as an online answer would be stored (a malformed one as a
   cached reject, raw text kept). The re-run then reads everything from the cache: zero requests.

`custom_id` is the cache key itself, so an answer finds its place without any other bookkeeping.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import socket
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from osum_data.llm.cache import AnswerCache
from osum_data.llm.settings import redact
from osum_data.llm.structured import MalformedOutput, parse_answer, schema_ref

log = logging.getLogger(__name__)

CHAT_URL = "/v1/chat/completions"
META_SUFFIX = ".osum.json"
OPENAI_MAX_LINES = 50_000  # the Batch API's limit per input file


class BatchError(ValueError):
    """A batch file that cannot be used (names the file and line)."""


class BatchCollector:
    """Appends pending requests of one client to its own file (flushed per line: a killed worker
    leaves at most one torn last line, which export skips)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.path = (
            self.directory / f"pending-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        )
        self._seen: set[str] = set()
        self._file = None

    def add(self, key: str, body: dict[str, Any], schema: type[BaseModel] | None) -> None:
        if key in self._seen:
            return
        self._seen.add(key)
        if self._file is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (lives with the collector)
        line = {
            "custom_id": key,
            "method": "POST",
            "url": CHAT_URL,
            "body": body,
            "schema": schema_ref(schema) if schema is not None else None,
        }
        self._file.write(json.dumps(line, ensure_ascii=False) + "\n")
        self._file.flush()

    def __del__(self):
        if self._file is not None:
            self._file.close()


@dataclass
class ExportReport:
    files: list[Path] = field(default_factory=list)
    requests: int = 0
    duplicates: int = 0
    already_cached: int = 0
    torn_lines: int = 0

    def summary(self) -> str:
        return (
            f"{self.requests} requests in {', '.join(map(str, self.files)) or 'no file'} "
            f"({self.duplicates} duplicates, {self.already_cached} already cached, "
            f"{self.torn_lines} torn lines skipped)"
        )


def _read_jsonl(path: Path):
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield n, json.loads(line)
                except ValueError:
                    yield n, None


def export_batch(
    batch_dir: Path, out: Path, cache: AnswerCache | None = None, max_lines: int = OPENAI_MAX_LINES
) -> ExportReport:
    """Merge the pending files under `batch_dir` into `out` (split as `out.NNN.jsonl` past
    `max_lines`) plus the sidecar `out + .osum.json`."""
    report = ExportReport()
    lines: dict[str, dict[str, Any]] = {}
    schemas: dict[str, str | None] = {}
    seen: set[str] = set()
    parts = sorted(Path(batch_dir).glob("pending-*.jsonl"))
    if not parts:
        raise BatchError(
            f"{batch_dir}: no pending-*.jsonl files (run a pipeline with llm.batch_dir set first)"
        )
    for part in parts:
        for n, rec in _read_jsonl(part):
            if not isinstance(rec, dict) or "custom_id" not in rec or "body" not in rec:
                log.warning("%s:%d: torn or foreign line skipped", part, n)
                report.torn_lines += 1
                continue
            key = rec["custom_id"]
            if key in seen:
                report.duplicates += 1
                continue
            seen.add(key)
            if cache is not None and key in cache:
                report.already_cached += 1
            else:
                schemas[key] = rec.get("schema")
                lines[key] = {"custom_id": key, "method": "POST", "url": CHAT_URL, "body": rec["body"]}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    items = list(lines.values())
    chunks = [items[i : i + max_lines] for i in range(0, len(items), max_lines)] or [[]]
    for i, chunk in enumerate(chunks):
        path = out if len(chunks) == 1 else out.with_name(f"{out.stem}.{i:03d}{out.suffix}")
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for item in chunk:
                f.write(json.dumps(item, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
        report.files.append(path)
    meta = out.with_name(out.name + META_SUFFIX)
    tmp = meta.with_name(meta.name + ".tmp")
    tmp.write_text(json.dumps({"format": 1, "schemas": schemas}, indent=0), encoding="utf-8")
    os.replace(tmp, meta)
    report.requests = len(items)
    return report


def _load_schema(ref: str | None) -> type[BaseModel] | None:
    if ref is None:
        return None
    module, _, qualname = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise BatchError(f"cannot load the answer schema {ref!r} named by the batch sidecar: {e}") from None
    if not (isinstance(obj, type) and issubclass(obj, BaseModel)):
        raise BatchError(f"the answer schema {ref!r} named by the batch sidecar is no pydantic model")
    return obj


@dataclass
class ImportReport:
    results: int = 0
    malformed: int = 0  # cached as rejects, raw text kept
    failed: int = 0  # errors / non-200: not cached, a later run or batch asks again
    unknown: int = 0  # custom_id not in this export
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failures: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        s = (
            f"{self.results} results cached, {self.malformed} malformed (cached as rejects), "
            f"{self.failed} failed (not cached), {self.unknown} unknown ids; "
            f"tokens: {self.prompt_tokens} prompt + {self.completion_tokens} completion"
        )
        if self.failures:
            s += "; failures: " + ", ".join(f"{k} x{v}" for k, v in self.failures.most_common(5))
        return s


def import_batch(results: list[Path], requests: Path, cache: AnswerCache) -> ImportReport:
    """Validate batch results and merge them into the cache (see the module docstring)."""
    meta_path = Path(requests).with_name(Path(requests).name + META_SUFFIX)
    if not meta_path.exists():
        raise BatchError(f"{meta_path}: missing; pass --requests the file written by batch-export")
    schemas = json.loads(meta_path.read_text(encoding="utf-8"))["schemas"]
    models: dict[str | None, type[BaseModel] | None] = {}
    report = ImportReport()
    for path in results:
        for n, rec in _read_jsonl(Path(path)):
            if not isinstance(rec, dict) or "custom_id" not in rec:
                raise BatchError(f"{path}:{n}: not a batch result line")
            key = rec["custom_id"]
            if key not in schemas:
                report.unknown += 1
                continue
            response = rec.get("response") or {}
            body = response.get("body") or {}
            if rec.get("error") or response.get("status_code") != 200 or not body.get("choices"):
                report.failed += 1
                err = rec.get("error") or {"status_code": response.get("status_code")}
                report.failures[redact(json.dumps(err, ensure_ascii=False))[:120]] += 1
                continue
            usage = body.get("usage") or {}
            report.prompt_tokens += usage.get("prompt_tokens") or 0
            report.completion_tokens += usage.get("completion_tokens") or 0
            ref = schemas[key]
            if ref not in models:
                models[ref] = _load_schema(ref)
            message = body["choices"][0].get("message") or {}
            text = message.get("content")
            model_name = body.get("model")
            try:
                if message.get("refusal"):
                    raise MalformedOutput("the model refused", message["refusal"])
                parse_answer(text, models[ref])
            except MalformedOutput as e:
                reason = redact(f"batch answer failed validation: {e}")
                code = "refusal" if message.get("refusal") else "malformed"
                cache.put(
                    key,
                    {
                        "status": "rejected",
                        "code": code,
                        "reason": reason,
                        "text": e.raw,
                        "model": model_name,
                    },
                )
                report.malformed += 1
                continue
            cache.put(key, {"status": "ok", "text": text, "model": model_name})
            report.results += 1
    return report
