"""The LLM client: many chat requests against one OpenAI-compatible endpoint, each ending in a validated
result or a reject with a reason.

Made for class stages: build one `LLMClient` per worker, call `client.run(requests)` once per batch of
cuts (it runs `complete_many` on its own event loop with at most `llm.concurrency` requests in flight),
and put `client.stats.as_dict()` into the stage's summary. Order of results = order of requests.

What happens to one request:
1. The cache is asked first (key: model + messages + sampling parameters + schema + template version).
   A hit costs no request, so a re-run sends nothing and works with the endpoint down.
2. With `llm.batch_dir` set, a miss is written to a batch file instead (code `batch_pending`).
3. Otherwise it is sent. 429, 5xx, timeouts and connection errors are retried with exponential backoff
   and full jitter, bounded by `max_retries` and `max_retry_time_s`; then the request is rejected as
   `unavailable` (not cached: a later run tries again). 401/403/404 stop the run: every other request
   would fail the same way, and rejecting them all would bury a configuration error in the rejects.
4. The answer is validated (pydantic). A malformed answer or a refusal is re-asked with a fresh seed
   (and `retry_temperature` when decoding was greedy: asking again greedily gives the same answer),
   then rejected with the raw text in the reason. Results and content rejects are cached (a reject
   never over a valid answer another worker cached meanwhile); transport failures are not.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import openai
from openai.types.chat import ChatCompletion
from pydantic import BaseModel

from osum_data.llm.accounting import LLMStats
from osum_data.llm.cache import AnswerCache, request_key
from osum_data.llm.settings import LLMSettings, api_key, redact
from osum_data.llm.structured import (
    FALLBACK_CHAIN,
    FIXED_MODE,
    MalformedOutput,
    json_schema,
    parse_answer,
    prompt_hint,
    response_format,
    validates,
)
from osum_data.rejects import FatalStageError
from osum_data.yaml_config import ConfigError

log = logging.getLogger(__name__)

SAMPLING_KEYS = (
    "temperature",
    "top_p",
    "max_tokens",
    "seed",
    "stop",
    "presence_penalty",
    "frequency_penalty",
)
# Reject codes a later run may turn into results (nothing about the content was decided).
TRANSIENT_CODES = frozenset({"unavailable", "bad_request", "batch_pending"})


class LLMEndpointError(FatalStageError):
    """The endpoint refuses us as a whole (wrong key, URL or model name): stop, don't reject cuts.
    A `FatalStageError`: raised inside a stage, the runner stops the run with this one line and the
    shard is not finished, so the re-run (with the key fixed) does it."""


class LLMEndpointDown(LLMEndpointError):
    """The circuit breaker: the endpoint failed every attempt in a row for a while (it died, or
    drops every request): stop, rather than grind each remaining cut through its retries."""


@dataclass
class LLMRequest:
    """One chat request. `id` is the caller's (a cut id); `params` override the sampling defaults of
    the settings (temperature, top_p, max_tokens, seed, stop, ...). Bump `template_version` whenever the
    prompt template or the meaning of the schema changes: it is part of the cache key."""

    id: str
    messages: list[dict[str, Any]]
    schema: type[BaseModel] | None = None
    template_version: str = "1"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class LLMResult:
    id: str
    key: str
    value: Any = None  # the validated pydantic instance (or the answer text without a schema)
    text: str | None = None  # the raw answer
    code: str | None = None  # None when ok; else malformed, refusal, unavailable, bad_request, ...
    reason: str | None = None
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.code is None

    @property
    def transient(self) -> bool:
        """A reject that says nothing about the content: a stage may fail the shard to retry it later."""
        return self.code in TRANSIENT_CODES


class _Budget:
    """A request's time budget. It starts when the request first gets a concurrency slot, not when it
    is queued: a batch of 10,000 requests must not spend the budget of the last ones waiting."""

    def __init__(self, total: float):
        self.total = total
        self._deadline: float | None = None

    def start(self) -> None:
        if self._deadline is None:
            self._deadline = time.monotonic() + self.total

    def remaining(self) -> float:
        return self.total if self._deadline is None else self._deadline - time.monotonic()


class _GiveUp(Exception):
    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _status_text(e: openai.APIStatusError) -> str:
    body = e.body if e.body is not None else e.message
    return redact(f"HTTP {e.status_code}: {body}")[:500]


def _refused_form(e: openai.APIStatusError) -> bool:
    """The server rejected our response_format rather than the request. llama-cpp-python answers a
    form it does not know with HTTP 500 and a validation message naming `response_format`."""
    return e.status_code in (400, 422, 500) and "response_format" in str(e.body or e.message)


class LLMClient:
    def __init__(self, settings: LLMSettings, base_url: str | None = None, model: str | None = None):
        self.settings = settings
        self.base_url = base_url or settings.env_base_url()
        self.model = model or settings.env_model()
        if not self.model:
            raise ConfigError("llm.model: no model name; set --set llm.model=NAME or OPENAI_MODEL")
        self.cache = AnswerCache(settings.resolved_cache_dir()) if settings.cache else None
        self.stats = LLMStats()
        if settings.structured == "auto":
            self._modes, self._mode_i = FALLBACK_CHAIN, 0
        else:
            self._modes, self._mode_i = (FIXED_MODE[settings.structured],), 0
        self._streak = 0  # failed attempts in a row, all requests together (the circuit breaker)
        self._streak_since = 0.0
        self._batch = None
        if settings.batch_dir is not None:
            from osum_data.llm.batch import BatchCollector

            self._batch = BatchCollector(settings.batch_dir)

    # ----------------------------------------------------------------------------------------------
    # keys and request bodies

    def sampling(self, request: LLMRequest) -> dict[str, Any]:
        unknown = set(request.params) - set(SAMPLING_KEYS)
        if unknown:
            raise ValueError(f"request {request.id}: unknown sampling parameters {sorted(unknown)}")
        s = self.settings
        base = {"temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens, "seed": s.seed}
        return {k: v for k, v in {**base, **request.params}.items() if v is not None}

    def key(self, request: LLMRequest) -> str:
        return request_key(
            self.model,
            request.messages,
            self.sampling(request),
            json_schema(request.schema),
            request.template_version,
        )

    def body(self, request: LLMRequest, mode: str | None = None, attempt: int = 0) -> dict[str, Any]:
        """The chat-completions body (also a batch line's `body`); never carries the API key."""
        params = self.sampling(request)
        if attempt:  # re-asking after a malformed answer: sample afresh
            params["seed"] = int(params.get("seed") or 0) + attempt
            if not params.get("temperature"):
                params["temperature"] = self.settings.retry_temperature
        messages = request.messages
        if request.schema is not None:
            mode = mode or self._modes[self._mode_i]
            fmt = response_format(mode, request.schema)
            if fmt is not None:
                params["response_format"] = fmt
            else:
                messages = [*messages[:-1], dict(messages[-1])]
                messages[-1]["content"] = str(messages[-1].get("content", "")) + prompt_hint(request.schema)
        return {"model": self.model, "messages": messages, **params}

    # ----------------------------------------------------------------------------------------------
    # public entry points

    def run(self, requests: list[LLMRequest]) -> list[LLMResult]:
        """Synchronous `complete_many` for a stage's `__call__` (no event loop of its own)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is None:  # outside the except block: a fatal error raised here has no context
            return asyncio.run(self.complete_many(requests))
        with ThreadPoolExecutor(1) as pool:  # called from inside a running loop (notebook, async actor)
            return pool.submit(asyncio.run, self.complete_many(requests)).result()

    async def complete_many(self, requests: list[LLMRequest]) -> list[LLMResult]:
        keys = [self.key(r) for r in requests]
        done: dict[str, LLMResult] = {}
        todo: dict[str, LLMRequest] = {}  # identical requests in one call are sent once
        for key, req in zip(keys, requests, strict=True):
            if key in done or key in todo:
                continue
            hit = self._from_cache(key, req)
            if hit is not None:
                done[key] = hit
            else:
                todo[key] = req
        if todo and self._batch is not None:
            for key, req in todo.items():
                self._batch.add(key, self.body(req), req.schema)
                done[key] = LLMResult(
                    req.id, key, code="batch_pending", reason=f"{req.id}: in {self._batch.path}"
                )
        elif todo:
            if self.base_url is None and api_key() is None:
                raise ConfigError(
                    "no LLM endpoint: set llm.base_url / OPENAI_BASE_URL (or OPENAI_API_KEY for OpenAI), "
                    "or build the client from resolve_endpoint(settings), which starts the embedded server"
                )
            sem = asyncio.Semaphore(self.settings.concurrency)
            async with openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key=api_key() or "not-needed",
                max_retries=0,  # retries are ours: bounded in count and time, and counted
                timeout=self.settings.timeout_s,
            ) as api:
                tasks = [asyncio.ensure_future(self._complete(api, sem, k, r)) for k, r in todo.items()]
                try:
                    answers = await asyncio.gather(*tasks)
                except BaseException:  # an endpoint error stops the batch: stop its other requests
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    raise
            done.update(zip(todo, answers, strict=True))
        results = []
        for key, req in zip(keys, requests, strict=True):
            r = done[key]
            if r.id != req.id:  # a duplicate of another request in this call
                r = LLMResult(
                    **{**r.__dict__, "id": req.id, "reason": r.reason and r.reason.replace(r.id, req.id, 1)}
                )
            results.append(r)
            if r.ok:
                self.stats.results += 1
            else:
                self.stats.rejected[r.code] += 1
        return results

    # ----------------------------------------------------------------------------------------------
    # one request

    def _from_cache(self, key: str, req: LLMRequest) -> LLMResult | None:
        if self.cache is None:
            return None
        entry = self.cache.get(key)
        if entry is None:
            return None
        if entry.get("status") == "ok":
            try:
                value = parse_answer(entry.get("text"), req.schema)
            except MalformedOutput as e:  # the schema changed under an unchanged template version
                log.warning("cache entry %s no longer validates (%s); asking again", key[:12], e.problem)
                return None
            self.stats.cache_hits += 1
            return LLMResult(req.id, key, value=value, text=entry.get("text"), cached=True)
        self.stats.cache_hits += 1
        reason = f"{req.id}: {entry['reason']} (cached)"
        return LLMResult(req.id, key, text=entry.get("text"), code=entry["code"], reason=reason, cached=True)

    def _store(self, key: str, entry: dict[str, Any]) -> None:
        if self.cache is not None:
            self.cache.put(key, {**entry, "model": self.model})

    async def _complete(self, api, sem: asyncio.Semaphore, key: str, req: LLMRequest) -> LLMResult:
        budget = _Budget(self.settings.max_retry_time_s)
        last: MalformedOutput | None = None
        code = "malformed"
        for attempt in range(self.settings.malformed_retries + 1):
            if attempt:
                self.stats.malformed_retries += 1
            try:
                message, finish = await self._send(api, sem, req, attempt, budget)
            except _GiveUp as g:
                if last is not None and g.code == "unavailable":
                    break  # out of time while re-asking: the bad answer is the verdict
                return LLMResult(req.id, key, code=g.code, reason=f"{req.id}: {g.reason}")
            # Masked at once: an answer that echoes the key must not reach a cache, a cut or a reject.
            text = redact(message.content) if message.content is not None else None
            refusal = getattr(message, "refusal", None)
            refusal = redact(refusal) if isinstance(refusal, str) else refusal
            try:
                if refusal:
                    code = "refusal"
                    raise MalformedOutput("the model refused", refusal)
                code = "malformed"
                if finish == "length":  # cut off: valid JSON by luck, or half a sentence
                    raise MalformedOutput("answer cut off at max_tokens", text or "")
                value = parse_answer(text, req.schema)
            except MalformedOutput as e:
                last = e
                log.debug("%s: %s answer (attempt %d): %s", req.id, code, attempt + 1, e.problem)
                continue
            self._store(key, {"status": "ok", "text": text})
            return LLMResult(req.id, key, value=value, text=text)
        reason = redact(f"{self.settings.malformed_retries + 1} answers failed validation, last: {last}")
        entry = {"status": "rejected", "code": code, "reason": reason, "text": last.raw, "model": self.model}
        still_valid = functools.partial(validates, model=req.schema)
        if self.cache is not None and not self.cache.put_reject(key, entry, still_valid):
            # Another worker cached a valid answer while we were asking: it stands, and it is ours.
            hit = self._from_cache(key, req)
            if hit is not None and hit.ok:
                return hit
        return LLMResult(req.id, key, text=last.raw, code=code, reason=f"{req.id}: {reason}")

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        cap = min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2 ** (attempt - 1))
        delay = random.uniform(0, cap)  # full jitter: many workers hitting one 429 do not retry in step
        try:
            if retry_after is not None:
                delay = max(delay, min(float(retry_after), self.settings.backoff_max_s))
        except ValueError:
            pass
        return delay

    async def _post(self, api, sem: asyncio.Semaphore, req: LLMRequest, attempt: int, budget: _Budget):
        """One HTTP request in a concurrency slot: (completion or None, exception or None, mode, body)."""
        async with sem:
            budget.start()
            remaining = budget.remaining()
            if remaining <= 0:
                raise _GiveUp("unavailable", f"no answer within {budget.total:.0f} s")
            # Built once a slot is free, so it uses the form any earlier refusal settled on.
            mode_i = self._mode_i
            body = self.body(req, self._modes[mode_i], attempt)
            self.stats.requests += 1
            try:
                # `post` (the SDK's documented way to any endpoint) rather than
                # `chat.completions.create`: the same request and response types, minus the SDK's
                # recursive re-typing of the body, a quarter of the client's CPU per request, which
                # our plain-JSON bodies do not need.
                completion = await api.post(
                    "/chat/completions",
                    body=body,
                    cast_to=ChatCompletion,
                    options={"timeout": min(self.settings.timeout_s, remaining)},
                )
            except (openai.OpenAIError, ValueError) as e:  # ValueError: a 200 whose body is no JSON
                return None, e, mode_i, body
        return completion, None, mode_i, body

    async def _send(self, api, sem: asyncio.Semaphore, req: LLMRequest, attempt: int, budget: _Budget):
        """The answer message and finish reason, after transport retries; raises _GiveUp."""
        failures = 0
        while True:
            retry_after = None
            completion, e, mode_i, body = await self._post(api, sem, req, attempt, budget)
            if isinstance(e, openai.APIStatusError) and (e.status_code < 500 and e.status_code != 429):
                self._streak = 0  # the server is up and answering (a 4xx is about the request)
            if e is None:
                if isinstance(completion, ChatCompletion) and completion.choices:
                    self._streak = 0
                    if completion.usage is not None:
                        self.stats.prompt_tokens += completion.usage.prompt_tokens or 0
                        self.stats.completion_tokens += completion.usage.completion_tokens or 0
                    choice = completion.choices[0]
                    return choice.message, choice.finish_reason
                error = "unusable response: no chat completion choices"
            elif isinstance(e, openai.APIStatusError):
                if req.schema is not None and "response_format" in body and _refused_form(e):
                    if mode_i + 1 < len(self._modes):
                        self._fall_back(mode_i, e)
                        continue
                    # llm.structured fixes this form: asking again cannot help.
                    raise _GiveUp("bad_request", f"response_format refused: {_status_text(e)}")
                if e.status_code in (401, 403, 404):
                    raise LLMEndpointError(
                        f"LLM endpoint {self.base_url or 'OpenAI'} (model {self.model!r}) refused the "
                        f"request: {_status_text(e)}"
                    )
                if e.status_code not in (408, 409, 429) and e.status_code < 500:
                    raise _GiveUp("bad_request", _status_text(e))
                error, retry_after = _status_text(e), e.response.headers.get("retry-after")
            elif isinstance(e, openai.APITimeoutError):
                error = f"timed out (timeout_s={self.settings.timeout_s:g})"
            elif isinstance(e, openai.APIConnectionError):
                error = redact(f"connection error: {e.__cause__ or e}")[:300]
            else:  # a 200 whose body is not a chat completion: a server or proxy glitch; ask again
                error = redact(f"unusable response body: {type(e).__name__}: {e}")[:300]
            failures += 1
            if not (isinstance(e, openai.APIStatusError) and e.status_code == 429):
                self._count_failure(error)  # rate limits are the server working as designed
            if failures > self.settings.max_retries:
                raise _GiveUp("unavailable", f"{failures} attempts failed, last: {error}")
            delay = self._backoff(failures, retry_after)
            if delay >= budget.remaining():
                raise _GiveUp(
                    "unavailable",
                    f"gave up after {failures} attempts ({budget.total:.0f} s budget), last: {error}",
                )
            self.stats.retries += 1
            log.debug("%s: %s; retry %d in %.2f s", req.id, error, failures, delay)
            await asyncio.sleep(delay)

    def _count_failure(self, error: str) -> None:
        """The circuit breaker: raise LLMEndpointDown once `breaker_failures` attempts in a row (of
        any of this client's requests) failed and the first of them is `breaker_window_s` old. Every
        worker of a run counts on its own; the first to trip stops the run (the runner treats the
        error as fatal), so the workers need not share a counter across processes."""
        now = time.monotonic()
        if self._streak == 0:
            self._streak_since = now
        self._streak += 1
        s = self.settings
        long_enough = now - self._streak_since >= s.breaker_window_s
        if s.breaker_failures and self._streak >= s.breaker_failures and long_enough:
            raise LLMEndpointDown(
                f"LLM endpoint {self.base_url or 'OpenAI'} (model {self.model!r}) is down: {self._streak} "
                f"attempts in a row failed over {now - self._streak_since:.0f} s, last: {error}; "
                "stopped (finished shards are kept: run the same command again when it is back)"
            )

    def _fall_back(self, mode_i: int, e: openai.APIStatusError) -> None:
        if self._mode_i == mode_i:  # concurrent requests may hit the same refusal: step once
            self._mode_i = mode_i + 1
            self.stats.structured_fallbacks += 1
            log.info(
                "endpoint refused response_format %r (%s); using %r",
                self._modes[mode_i],
                _status_text(e)[:120],
                self._modes[self._mode_i],
            )
