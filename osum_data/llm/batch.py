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
   cached reject, raw text kept, but never over a valid cached answer). Every line is read: one that
   cannot be used (not JSON, not a result line, an unknown custom_id, a failed request) is counted as
   rejected with its line number and reason. The re-run then reads everything from the cache.

`custom_id` is the cache key itself, so an answer finds its place without any other bookkeeping.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from osum_data.errors import UsageError
from osum_data.llm.cache import AnswerCache
from osum_data.llm.settings import redact
from osum_data.llm.structured import MalformedOutput, parse_answer, schema_ref, validates

log = logging.getLogger(__name__)

CHAT_URL = "/v1/chat/completions"
META_SUFFIX = ".osum.json"
OPENAI_MAX_LINES = 50_000  # the Batch API's limit per input file


class BatchError(UsageError):
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


def check_out_file(out: Path, flag: str = "--out") -> None:
    """Fail before any work when an output file cannot be written where the user asked."""
    out = Path(out)
    if out.is_dir():
        raise BatchError(f"{flag} {out} is a directory; give a file path")
    parent = next((p for p in out.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise BatchError(f"{flag} {out}: {parent} is a file, not a folder; give another path")


def write_atomic(path: Path, chunks: Iterable[str]) -> None:
    """Write `path` through a temporary file renamed into place; a failed write leaves neither."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(chunks)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
    check_out_file(out)
    if max_lines < 1:
        raise BatchError(f"--max-lines must be at least 1, got {max_lines}")
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
        write_atomic(path, (json.dumps(item, ensure_ascii=False) + "\n" for item in chunk))
        report.files.append(path)
    meta = out.with_name(out.name + META_SUFFIX)
    write_atomic(meta, [json.dumps({"format": 1, "schemas": schemas}, indent=0)])
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


class _Message(BaseModel):
    content: str | None = None
    refusal: str | None = None


class _Choice(BaseModel):
    message: _Message | None = None


class _Usage(BaseModel):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class _Body(BaseModel):
    """The chat completion of a 200 response: only what import reads (pydantic ignores the rest)."""

    model: str | None = None
    choices: list[_Choice] = []
    usage: _Usage | None = None


class _Response(BaseModel):
    status_code: int | None = None
    body: Any = None  # a chat completion when the status is 200, an error object otherwise


class _ResultLine(BaseModel):
    """One line of a batch output file, as the OpenAI Batch API and `vllm run-batch` write it."""

    custom_id: str
    response: _Response | None = None
    error: Any = None


def _shape_problem(obj: Any, model: type[BaseModel], where: str) -> str | None:
    """None when `obj` validates as `model`, else what is wrong with it, in JSON's words."""
    if not isinstance(obj, dict):
        kinds = {str: "a string", list: "an array", bool: "a boolean", int: "a number", float: "a number"}
        return f"{where} is {kinds.get(type(obj), 'null')}, not a JSON object"
    try:
        model.model_validate(obj)
    except ValidationError as e:
        err = e.errors()[0]
        return f"{where}.{'.'.join(str(x) for x in err['loc'])}: {err['msg']}"
    return None


@dataclass
class ImportReport:
    """Every non-blank line of the results files ends in exactly one count:
    lines = imported (results + malformed) + rejected (kept + failed + unknown + bad_lines)."""

    lines: int = 0
    results: int = 0  # valid answers, cached
    malformed: int = 0  # cached as rejects, raw text kept
    kept: int = 0  # a malformed answer for a key whose cached answer is valid: the valid one stays
    failed: int = 0  # errors / non-200: not cached, a later run or batch asks again
    unknown: int = 0  # custom_id not in this export
    bad_lines: int = 0  # not JSON, or not shaped like a batch result line
    prompt_tokens: int = 0
    completion_tokens: int = 0
    rejects: list[tuple[str, str]] = field(default_factory=list)  # (FILE:LINE, reason) per rejected line

    @property
    def imported(self) -> int:
        return self.results + self.malformed

    @property
    def rejected(self) -> int:
        return self.kept + self.failed + self.unknown + self.bad_lines

    def reject(self, where: str, counter: str, reason: str) -> None:
        setattr(self, counter, getattr(self, counter) + 1)
        self.rejects.append((where, reason))

    def summary(self, show: int = 10) -> str:
        s = (
            f"{self.lines} lines = {self.imported} imported ({self.results} answers cached, "
            f"{self.malformed} malformed cached as rejects) + {self.rejected} rejected ({self.kept} kept "
            f"existing valid answer, {self.failed} failed (not cached), {self.unknown} unknown custom_id, "
            f"{self.bad_lines} bad lines); tokens: {self.prompt_tokens} prompt + "
            f"{self.completion_tokens} completion"
        )
        s += "".join(f"\n  {where}: {reason}" for where, reason in self.rejects[:show])
        if len(self.rejects) > show:
            s += f"\n  ... and {len(self.rejects) - show} more rejected lines"
        return s


def _load_sidecar(requests: Path) -> dict[str, str | None]:
    """The schema reference of every request id batch-export wrote (errors name the file to fix)."""
    if requests.is_dir():
        raise BatchError(f"--requests {requests} is a directory; give the file batch-export wrote")
    if not requests.is_file():
        raise BatchError(f"--requests {requests}: no such file; give the file batch-export wrote")
    meta_path = requests.with_name(requests.name + META_SUFFIX)
    redo = "run `osum-data llm batch-export` again on the same batch folder (the request ids stay the same)"
    if not meta_path.is_file():
        raise BatchError(f"{meta_path}: missing (batch-export writes it next to {requests.name}); {redo}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise BatchError(f"{meta_path}: not valid JSON ({e}); {redo}") from None
    schemas = meta.get("schemas") if isinstance(meta, dict) else None
    if not isinstance(schemas, dict):
        raise BatchError(f"{meta_path}: no 'schemas' mapping, not a batch-export sidecar; {redo}")
    return schemas


def import_batch(results: list[Path], requests: Path, cache: AnswerCache) -> ImportReport:
    """Validate batch results and merge them into the cache (see the module docstring). Every line is
    read: one that cannot be used is a reject with its line number and reason, never the end of the
    import, and a malformed answer never replaces a valid cached one."""
    requests = Path(requests)
    schemas = _load_sidecar(requests)
    for path in map(Path, results):  # all of them, before anything is written
        if path.is_dir():
            raise BatchError(f"{path} is a directory; give the batch results file")
        if not path.is_file():
            raise BatchError(f"{path}: no such results file")
    models: dict[str | None, type[BaseModel] | None] = {}
    report = ImportReport()
    for path in map(Path, results):
        for n, rec in _read_jsonl(path):
            report.lines += 1
            _import_line(f"{path}:{n}", rec, requests, schemas, models, cache, report)
    return report


def _import_line(
    where: str,
    rec: Any,
    requests: Path,
    schemas: dict[str, str | None],
    models: dict[str | None, type[BaseModel] | None],
    cache: AnswerCache,
    report: ImportReport,
) -> None:
    if rec is None:
        return report.reject(where, "bad_lines", "not JSON (a torn or foreign line)")
    problem = _shape_problem(rec, _ResultLine, "the line")
    if problem is not None:
        return report.reject(where, "bad_lines", f"not a batch result line: {problem}")
    line = _ResultLine.model_validate(rec)
    key = line.custom_id
    if key not in schemas:
        return report.reject(where, "unknown", f"custom_id {key[:70]!r} is not in {requests.name}")
    response = line.response or _Response()
    if line.error or response.status_code != 200:
        err = line.error or {"status_code": response.status_code, "body": response.body}
        reason = redact(json.dumps(err, ensure_ascii=False, default=str))[:200]
        return report.reject(where, "failed", f"failed request (not cached): {reason}")
    problem = _shape_problem(response.body, _Body, "response.body")
    if problem is not None:
        return report.reject(where, "bad_lines", f"not a chat completion: {problem}")
    body = _Body.model_validate(response.body)
    if not body.choices:
        return report.reject(where, "failed", "failed request (not cached): a 200 response with no choices")
    if body.usage is not None:
        report.prompt_tokens += body.usage.prompt_tokens or 0
        report.completion_tokens += body.usage.completion_tokens or 0
    ref = schemas[key]
    if ref not in models:
        models[ref] = _load_schema(ref)
    model = models[ref]
    message = body.choices[0].message or _Message()
    # Masked before it is parsed: the cached text and the value a stage gets from it agree.
    message = _Message(
        content=redact(message.content) if message.content is not None else None,
        refusal=redact(message.refusal) if message.refusal is not None else None,
    )
    try:
        if message.refusal:
            raise MalformedOutput("the model refused", message.refusal)
        parse_answer(message.content, model)
    except MalformedOutput as e:
        problem = redact(str(e))
        entry = {
            "status": "rejected",
            "code": "refusal" if message.refusal else "malformed",
            "reason": f"batch answer failed validation: {problem}",
            "text": e.raw,
            "model": body.model,
        }
        if cache.put_reject(key, entry, functools.partial(validates, model=model)):
            report.malformed += 1
        else:
            why = f"kept existing valid answer; this one failed validation: {problem[:200]}"
            report.reject(where, "kept", why)
        return None
    cache.put(key, {"status": "ok", "text": message.content, "model": body.model})
    report.results += 1
    return None
