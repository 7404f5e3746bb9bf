"""A scriptable OpenAI-compatible chat server on loopback, for tests and the rate benchmark.

A test double on purpose: no real server can be told to fail on cue. It speaks the real wire format
(`POST /v1/chat/completions`, `GET /v1/models`) to the real `openai` client, over real HTTP.

Faults are scripted per request by a marker in the last user message, `[[fault:NAME]]` or
`[[fault:NAMExN]]` (the first N attempts of that exact message fail, the next succeed):
  429, 500      the status code (429 with `retry-after: 0`)
  timeout       sleep past the client's timeout
  slow          answer after `slow_s`
  malformed     HTTP 200, but the answer text is not JSON
  refusal       HTTP 200, the answer is a refusal (message.refusal set, as OpenAI does)
  length        HTTP 200, a valid answer but finish_reason "length" (cut off at max_tokens)
  body          HTTP 200 with a body that is not JSON at all
  drop          close the connection without an answer
  echo_auth     HTTP 500 whose error body repeats the request's Authorization header
Without a marker the answer is `{"answer": "reply to: <message>"}` when JSON is asked for, else plain
text, or what `reply_fn(text, body)` returns. `latency_s` delays every answer (the benchmark's
bound). `refuse_formats` lists response_format types answered with the HTTP 500 that
llama-cpp-python gives for forms it does not know.

Whole-server behaviours (what a broken endpoint looks like from outside):
  drop_completions  lists its models, but closes the connection on every chat completion (the
                    llama.cpp server that died at its first completion, as seen by a client)
  die_after=N       after N answered work requests it stops listening and drops every request
                    on the connections still open: a server that dies mid-run
  accept_key=KEY    answers HTTP 401 unless the request carries `Authorization: Bearer KEY`
  echo_auth         every answer repeats the request's Authorization header inside its text
                    (inside each string value of a JSON answer, so it still validates)
The start-up self-test's request (osum_data.llm.probe) is answered "OK" and counted in `probes`, not
in `requests`/`attempts`, so counts of work requests stay comparable with a stage's counters; it
goes through the whole-server behaviours like any request.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections import Counter

from aiohttp import web

from osum_data.llm.probe import PROBE_MESSAGES

_MARK = re.compile(r"\[\[fault:([a-z_0-9]+?)(?:x(\d+))?\]\]")


class FaultServer:
    def __init__(
        self,
        latency_s: float = 0.0,
        timeout_sleep_s: float = 2.0,
        slow_s: float = 0.3,
        refuse_formats: tuple[str, ...] = (),
        reply_fn=None,
        drop_completions: bool = False,
        die_after: int | None = None,
        accept_key: str | None = None,
        echo_auth: bool = False,
    ):
        self.drop_completions = drop_completions
        self.die_after = die_after
        self.accept_key = accept_key
        self.echo_auth = echo_auth
        self.dead = False
        self.probes = 0
        self.dropped = 0  # requests closed without an answer (drop_completions, dead)
        self.refused = 0  # 401s for a wrong key
        self.latency_s = latency_s
        self.timeout_sleep_s = timeout_sleep_s
        self.slow_s = slow_s
        self.refuse_formats = refuse_formats
        self.reply_fn = reply_fn  # (clean message text, request body) -> answer text
        self.requests = 0
        self.attempts: Counter = Counter()  # per message text
        self.faults: Counter = Counter()  # faults injected, by name
        self.formats: Counter = Counter()  # response_format types seen
        self.auth_headers: set[str] = set()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -------------------------------------------------------------------------------------------

    def _completion(self, text: str, reply: str, refusal: str | None = None, finish: str = "stop") -> dict:
        return {
            "id": f"chatcmpl-{self.requests}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "fault-model",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": None if refusal else reply,
                        "refusal": refusal,
                    },
                    "finish_reason": finish,
                }
            ],
            "usage": {
                "prompt_tokens": len(text.split()),
                "completion_tokens": len(reply.split()),
                "total_tokens": len(text.split()) + len(reply.split()),
            },
        }

    def _echo(self, reply: str, auth: str) -> str:
        try:
            obj = json.loads(reply)
        except ValueError:
            return f"{reply} (auth: {auth})"
        if isinstance(obj, dict):
            obj = {k: f"{v} (auth: {auth})" if isinstance(v, str) else v for k, v in obj.items()}
        return json.dumps(obj)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        auth = request.headers.get("Authorization", "")
        if self.dead or self.drop_completions:
            with self._lock:
                self.dropped += 1
            request.transport.close()
            return web.Response(status=500)
        if self.accept_key is not None and auth != f"Bearer {self.accept_key}":
            with self._lock:
                self.refused += 1
            err = {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                             "code": "invalid_api_key"}}  # fmt: skip
            return web.json_response(err, status=401)
        if body.get("messages") == PROBE_MESSAGES:
            with self._lock:
                self.probes += 1
            reply = self._echo("OK", auth) if self.echo_auth else "OK"
            return web.json_response(self._completion("probe", reply))
        with self._lock:
            self.requests += 1
            self.auth_headers.add(auth)
            if self.die_after is not None and self.requests > self.die_after:
                self.dead = True
        if self.dead:
            self._die()
            with self._lock:
                self.dropped += 1
            request.transport.close()
            return web.Response(status=500)
        fmt = (body.get("response_format") or {}).get("type")
        self.formats[fmt] += 1
        if fmt in self.refuse_formats:
            msg = f"validation error: ('body', 'response_format', 'type') Input should be 'text', got {fmt!r}"
            return web.json_response({"error": {"message": msg, "type": "internal_server_error"}}, status=500)
        text = str(body["messages"][-1]["content"])
        with self._lock:
            self.attempts[text] += 1
            attempt = self.attempts[text]
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        m = _MARK.search(text)
        fault = None
        if m and (m.group(2) is None or attempt <= int(m.group(2))):
            fault = m.group(1)
            self.faults[fault] += 1
        clean = _MARK.sub("", text).strip()
        wants_json = fmt is not None or "JSON" in text
        reply = json.dumps({"answer": f"reply to: {clean}"}) if wants_json else f"reply to: {clean}"
        if self.reply_fn is not None:
            reply = self.reply_fn(clean, body)
        if fault in ("429", "500"):
            headers = {"retry-after": "0"} if fault == "429" else {}
            err = {"error": {"message": f"injected {fault}", "type": "server_error"}}
            return web.json_response(err, status=int(fault), headers=headers)
        if fault == "echo_auth":
            err = {"error": {"message": f"upstream failed for {request.headers.get('Authorization')}"}}
            return web.json_response(err, status=500)
        if fault == "timeout":
            await asyncio.sleep(self.timeout_sleep_s)
        if fault == "slow":
            await asyncio.sleep(self.slow_s)
        if fault == "body":
            return web.Response(text="<html>502 bad gateway</html>", content_type="application/json")
        if fault == "drop":
            request.transport.close()
            return web.Response(status=500)
        if fault == "malformed":
            reply = '{"answer": "unterminated'
        if self.echo_auth:
            reply = self._echo(reply, auth)
        refusal = "I'm sorry, but I can't help with that." if fault == "refusal" else None
        finish = "length" if fault == "length" else "stop"
        return web.json_response(self._completion(text, reply, refusal, finish))

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fault-model", "object": "model"}]})

    def _die(self) -> None:
        """Stop listening (new connections are refused); requests on open connections are dropped."""
        if self._site is not None:
            site, self._site = self._site, None
            asyncio.ensure_future(site.stop())

    # -------------------------------------------------------------------------------------------

    def __enter__(self) -> FaultServer:
        started = threading.Event()

        def serve():
            self._loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self._chat)
            app.router.add_get("/v1/models", self._models)
            self._runner = web.AppRunner(app, access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
            self._loop.run_until_complete(site.start())
            self._site = site
            self.port = site._server.sockets[0].getsockname()[1]
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        started.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        fut.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
