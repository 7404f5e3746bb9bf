"""The start-up self-test of an LLM endpoint: one real chat completion before any work.

A server that lists its models can still be unable to answer: the llama.cpp build that crashed on
its first completion (an AMX instruction the VM did not grant) answered `/v1/models` and then dropped
every chat request, so every cut of three tasks went through seven retries against a dead port and
came out empty. So readiness is a real answer, not a health endpoint: `check_endpoint` sends one tiny
completion and, if it does not come back, raises with one line naming the endpoint, the cause and
the fix.
"""

from __future__ import annotations

import time

import openai

from osum_data.errors import OsumError
from osum_data.llm.settings import api_key, redact

PROBE_MESSAGES = [{"role": "user", "content": "Reply with the word OK."}]
ATTEMPTS = 3  # transient failures (a 503 while a server warms up) are asked again, briefly


class EndpointCheckFailed(OsumError):
    """The endpoint did not answer its test completion. `cause` and `fix` are the two halves of the
    one-line message; `status` is the HTTP status when there was one."""

    def __init__(self, cause: str, fix: str, status: int | None = None):
        super().__init__(f"{cause}; {fix}")
        self.cause, self.fix, self.status = cause, fix, status


def _where(base_url: str | None) -> str:
    return base_url or "OpenAI"


def _explain(e: Exception, base_url: str | None, model: str, timeout_s: float) -> EndpointCheckFailed:
    where = _where(base_url)
    if isinstance(e, openai.APITimeoutError):
        return EndpointCheckFailed(
            f"no answer within {timeout_s:g} s",
            f"check that the server at {where} is running and not overloaded (or raise llm.timeout_s)",
        )
    if isinstance(e, openai.APIConnectionError):
        cause = redact(str(e.__cause__ or e)).splitlines()[0][:200] if str(e.__cause__ or e) else "no answer"
        lists = _lists_models(base_url)
        if lists:
            return EndpointCheckFailed(
                f"it lists its models but dropped the chat completion ({cause})",
                "the server crashes when it generates: see its log, or point llm.base_url elsewhere",
            )
        return EndpointCheckFailed(
            f"cannot connect ({cause})",
            f"start the server or fix llm.base_url / OPENAI_BASE_URL (now {where})",
        )
    if isinstance(e, openai.APIStatusError):
        body = redact(f"HTTP {e.status_code}: {e.body if e.body is not None else e.message}")[:300]
        if e.status_code in (401, 403):
            return EndpointCheckFailed(
                f"the API key was refused ({body})",
                "export a valid OPENAI_API_KEY for this endpoint (with access to the model)",
                e.status_code,
            )
        if e.status_code == 404:
            return EndpointCheckFailed(
                f"no such model or path ({body})",
                f"check llm.model (now {model!r}) and that llm.base_url ends in /v1",
                e.status_code,
            )
        return EndpointCheckFailed(
            f"the test completion failed ({body})", "see the server's log", e.status_code
        )
    return EndpointCheckFailed(
        redact(f"unusable answer ({type(e).__name__}: {e})")[:300],
        "is this an OpenAI-compatible endpoint? check llm.base_url",
    )


def _lists_models(base_url: str | None) -> bool:
    if base_url is None:
        return False
    try:
        key = api_key() or "not-needed"
        with openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=5) as client:
            client.models.list()
        return True
    except Exception:
        return False


def check_endpoint(base_url: str | None, model: str, timeout_s: float = 60.0) -> None:
    """One real chat completion against `base_url`; raises EndpointCheckFailed when none comes back.
    Rate limits and 5xx are asked again (at most ATTEMPTS times, a second apart); a refused key, an
    unknown model or a dropped connection are not going to change."""
    with openai.OpenAI(
        base_url=base_url, api_key=api_key() or "not-needed", max_retries=0, timeout=timeout_s
    ) as client:
        last: Exception | None = None
        for attempt in range(ATTEMPTS):
            if attempt:
                time.sleep(1.0)
            try:
                completion = client.chat.completions.create(
                    model=model, messages=PROBE_MESSAGES, max_tokens=4, temperature=0, seed=0
                )
            except openai.APIStatusError as e:
                last = e
                if e.status_code in (408, 409, 429) or e.status_code >= 500:
                    continue
                break
            except openai.APITimeoutError as e:
                last = e
                break
            except openai.APIConnectionError as e:
                last = e
                continue
            except ValueError as e:  # a 200 whose body is no JSON
                last = e
                break
            if getattr(completion, "choices", None):
                return
            last = ValueError("the answer has no choices")
            break
    assert last is not None
    raise _explain(last, base_url, model, timeout_s)


def describe_failure(base_url: str | None, model: str, failure: EndpointCheckFailed) -> str:
    """The one line a user sees."""
    return f"LLM endpoint {_where(base_url)} (model {model!r}) failed its start-up test: {failure}"
