"""Structured output: how to ask a server for JSON, and how to check what comes back.

Servers differ in what `response_format` they accept: OpenAI and vLLM take
`{"type": "json_schema", ...}`; llama-cpp-python's server takes `{"type": "json_object", "schema": ...}`
(and turns the schema into a decoding grammar) but rejects `json_schema` with a 422; some servers know
only plain `json_object`; some nothing. `FALLBACK_CHAIN` is the order the client walks down when a
server answers 400/422 to a form. Whatever the server promised, every answer is validated here with
the caller's pydantic model: a server-side grammar is an optimisation, never a guarantee.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

from pydantic import BaseModel, ValidationError

# Each mode names a request form; "prompt" sends no response_format and states the schema in the prompt.
FALLBACK_CHAIN = ("json_schema", "json_object_schema", "json_object", "prompt")
# `llm.structured: auto` walks the whole chain; a fixed setting uses one form and never falls back.
FIXED_MODE = {"json_schema": "json_schema", "json_object": "json_object_schema", "prompt": "prompt"}

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)
MAX_RAW_IN_REASON = 1000


class MalformedOutput(ValueError):
    """An answer that does not satisfy the request's schema; `str()` keeps the raw text."""

    def __init__(self, problem: str, raw: str):
        shown = raw if len(raw) <= MAX_RAW_IN_REASON else raw[:MAX_RAW_IN_REASON] + "...[truncated]"
        super().__init__(f"{problem}; raw answer: {shown!r}")
        self.problem = problem
        self.raw = raw


@cache
def _schema_of(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()  # costs ~1 ms: computed once per model class


def json_schema(model: type[BaseModel] | None) -> dict[str, Any] | None:
    """The model's JSON schema (shared: callers must not modify it)."""
    return _schema_of(model) if model is not None else None


def schema_ref(model: type[BaseModel]) -> str:
    """`module:QualName`, so a batch import can find the same pydantic model again."""
    return f"{model.__module__}:{model.__qualname__}"


def response_format(mode: str, model: type[BaseModel]) -> dict[str, Any] | None:
    schema = json_schema(model)
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": model.__name__, "schema": schema}}
    if mode == "json_object_schema":  # llama.cpp / Anyscale extension: the schema becomes a grammar
        return {"type": "json_object", "schema": schema}
    if mode == "json_object":
        return {"type": "json_object"}
    return None


def prompt_hint(model: type[BaseModel]) -> str:
    """Appended to the last user message when the server takes no response_format at all."""
    schema = json.dumps(json_schema(model), ensure_ascii=False, separators=(",", ":"))
    return f"\n\nAnswer with one JSON object only, matching this JSON schema: {schema}"


def _json_candidates(text: str):
    yield text
    m = _FENCE.match(text)
    if m:
        yield m.group(1)
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        yield text[start : end + 1]


def parse_answer(text: str | None, model: type[BaseModel] | None) -> Any:
    """The validated value of an answer: the model instance, or the stripped text when there is no
    schema. Raises MalformedOutput naming the problem and keeping the raw text."""
    raw = text or ""
    if model is None:
        if not raw.strip():
            raise MalformedOutput("empty answer", raw)
        return raw.strip()
    obj, error = None, "no JSON object in the answer"
    for cand in _json_candidates(raw.strip()):
        try:
            obj = json.loads(cand)
            break
        except ValueError as e:
            error = f"invalid JSON ({e})"
    else:
        raise MalformedOutput(error, raw)
    try:
        return model.model_validate(obj)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc']) or '<root>'}: {err['msg']}" for err in e.errors()[:5]
        )
        raise MalformedOutput(f"does not match {model.__name__} ({problems})", raw) from None


def validates(text: str | None, model: type[BaseModel] | None) -> bool:
    """Whether `parse_answer` accepts `text` (a cached answer checked before a reject may replace it)."""
    try:
        parse_answer(text, model)
    except MalformedOutput:
        return False
    return True
