"""Shared pieces of the LLM tests: the sentinel API key, settings against a server, a schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from osum_data.llm import LLMRequest, LLMSettings

SENTINEL_KEY = "sk-osum-SENTINEL-7f3a9c1e55"


class Answer(BaseModel):
    answer: str


@pytest.fixture
def llm_env(monkeypatch, tmp_path):
    """A sentinel API key in the environment, no endpoint variables, the user cache under tmp_path."""
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL_KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_MODEL", raising=False)
    monkeypatch.setenv("OSUM_CACHE", str(tmp_path / "user-cache"))
    return tmp_path


def fast_settings(base_url: str, **kw) -> LLMSettings:
    """Short timeouts and backoff so fault tests take well under a second per retry."""
    values = dict(
        base_url=base_url,
        model="fault-model",
        timeout_s=0.5,
        max_retries=3,
        max_retry_time_s=5.0,
        backoff_base_s=0.01,
        backoff_max_s=0.05,
        malformed_retries=1,
        concurrency=8,
    )
    values.update(kw)
    return LLMSettings(**values)


def ask(i: int, fault: str = "", schema=Answer) -> LLMRequest:
    text = f"question {i}" + (f" [[fault:{fault}]]" if fault else "")
    return LLMRequest(id=f"cut-{i}", messages=[{"role": "user", "content": text}], schema=schema)


def files_containing(root: Path, needle: str) -> list[Path]:
    """Every file under root whose bytes contain needle."""
    return [p for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]
