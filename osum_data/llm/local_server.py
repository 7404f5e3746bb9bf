"""The embedded OpenAI-compatible server process: `python -m osum_data.llm.local_server --model X.gguf`.

`server.py` starts it as a child process on loopback; it serves `GET /v1/models` and
`POST /v1/chat/completions` (with `usage`, `temperature`, `top_p`, `seed`, `max_tokens`, `stop`,
presence/frequency penalties, and `response_format` in both the OpenAI form
`{"type": "json_schema", "json_schema": {"schema": ...}}` and the `{"type": "json_object", "schema": ...}`
form; plain `json_object` means "any JSON object"). A schema is compiled by llguidance and constrains
decoding (engine.py).

Requests are batched continuously: each HTTP request waits on a future while one generation thread
decodes every running request together, one token per step (up to `--max-batch` rows), lets a
finished request leave at once and takes queued ones in between two steps. That is several times the
throughput of one-by-one decoding on a CPU, and no request waits for a longer one. The standard
library's threading HTTP server is enough for loopback traffic from a few workers and adds no
dependency.

It binds before loading the model (an occupied port fails at once) and prints
`listening on http://HOST:PORT/v1` only when it can answer, so the parent learns both that it is ready
and which port it got (`--port 0` lets the kernel pick one: no race for a free port).
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
import uuid
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MAX_BODY = 16 * 2**20
GATHER_S = 0.005
READY_PREFIX = "listening on "


class RequestError(Exception):
    """A request we answer with a 4xx and an OpenAI-shaped error body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def _number(body: dict[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise RequestError(400, f"{name} must be a number in [{lo:g}, {hi:g}], got {value!r}", name)
    return float(value)


def _content(message: Any, i: int) -> dict[str, str]:
    if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
        what = f"messages[{i}] must be an object with role system, user or assistant"
        raise RequestError(400, what, "messages")
    content = message.get("content")
    if isinstance(content, list):  # content parts: text only
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise RequestError(400, f"messages[{i}].content: only text parts are supported", "messages")
            parts.append(str(part.get("text", "")))
        content = "".join(parts)
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise RequestError(400, f"messages[{i}].content must be a string or text parts", "messages")
    return {"role": message["role"], "content": content}


def response_schema(fmt: Any) -> dict[str, Any] | None:
    """The JSON schema a `response_format` asks for (None: free text)."""
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise RequestError(400, "response_format must be an object", "response_format")
    kind = fmt.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        schema = fmt.get("schema") or {"type": "object"}
    elif kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if schema is None:
            raise RequestError(400, "response_format.json_schema.schema is required", "response_format")
    else:
        what = f"response_format.type must be text, json_object or json_schema, got {kind!r}"
        raise RequestError(400, what, "response_format")
    if not isinstance(schema, dict):
        raise RequestError(400, "response_format: the schema must be a JSON object", "response_format")
    return schema


class _Busy:
    """What one busy period of the decoder (from idle to idle) did: one line in the server's log,
    to see what batching achieved and what it cost."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = self.prompt_tokens = self.completion_tokens = self.steps = self.peak = 0
        self.t0, self.cpu0 = time.monotonic(), time.process_time()

    def admit(self, batch: Any) -> None:
        if not self.requests and not self.steps:
            self.t0, self.cpu0 = time.monotonic(), time.process_time()
        self.requests += batch.size
        self.prompt_tokens += sum(len(r.job.prompt_ids) for r in batch.rows)

    def finish(self, out: Any) -> None:
        self.completion_tokens += out.completion_tokens

    def log(self) -> None:
        seconds = time.monotonic() - self.t0
        print(
            f"busy requests={self.requests} peak_rows={self.peak} steps={self.steps} "
            f"prompt_tokens={self.prompt_tokens} completion_tokens={self.completion_tokens} "
            f"seconds={seconds:.2f} cpu_s={time.process_time() - self.cpu0:.2f} "
            f"tokens_per_s={self.completion_tokens / max(seconds, 1e-9):.1f}",
            flush=True,
        )
        self.reset()


class Service:
    """The model, the grammar cache and the batching thread behind the HTTP handlers."""

    def __init__(self, engine, name: str, max_batch: int):
        self.engine = engine
        self.name = name
        self.max_batch = max_batch
        self.queue: queue.Queue[tuple[Any, Future]] = queue.Queue()
        self._grammars: dict[str, str] = {}
        self._lock = threading.Lock()  # guards the grammar cache
        threading.Thread(target=self._loop, name="generate", daemon=True).start()

    def _loop(self) -> None:
        """Continuous batching: requests join the running batch between two decoding steps (up to
        `max_batch` rows) and leave it as soon as they finish, so a short answer never waits for a
        long one, nor a queued request for the whole batch to end."""
        batch = None
        busy = _Busy()
        while True:
            new = self._take(0 if batch is None else batch.size)
            if new:
                try:
                    started = self.engine.start([job for job, _ in new], [fut for _, fut in new])
                except Exception as e:  # answer these requests; the server stays up
                    for _, fut in new:
                        fut.set_exception(e)
                    started = None
                if started is not None:
                    busy.admit(started)
                    if batch is None:
                        batch = started
                    else:
                        batch.merge(started)
            if batch is None:
                continue
            try:
                done = self.engine.step(batch)
            except Exception as e:  # every row of the batch fails; the server stays up
                for row in batch.rows:
                    row.tag.set_exception(e)
                batch = None
                busy.log()
                continue
            for fut, out in done:
                busy.finish(out)
                fut.set_result(out)
            busy.steps += 1
            busy.peak = max(busy.peak, batch.size + len(done))
            if not batch.size:
                batch = None
                busy.log()

    def _take(self, running: int) -> list[tuple[Any, Future]]:
        """The requests to start now: with nothing running, wait for one and those sent with it (a
        few ms); while decoding, whatever is queued, up to the free rows."""
        room = self.max_batch - running
        taken: list[tuple[Any, Future]] = []
        if room <= 0:
            return taken
        if not running:
            taken.append(self.queue.get())
        while len(taken) < room:
            try:
                taken.append(self.queue.get(timeout=GATHER_S) if not running else self.queue.get_nowait())
            except queue.Empty:
                break
        return taken

    def _grammar(self, schema: dict[str, Any]) -> str:
        from osum_data.llm.engine import GrammarError

        key = json.dumps(schema, sort_keys=True)
        with self._lock:
            if key not in self._grammars:
                try:
                    grammar = self.engine.grammar(schema)
                except GrammarError as e:
                    raise RequestError(400, f"response_format: {e}", "response_format") from None
                if len(self._grammars) > 256:
                    self._grammars.clear()
                self._grammars[key] = grammar
            return self._grammars[key]

    def job(self, body: dict[str, Any]):
        from osum_data.llm.engine import Job

        if body.get("model") != self.name:
            what = f"the model {body.get('model')!r} does not exist; this server has {self.name!r}"
            raise RequestError(404, what, "model", "model_not_found")
        if body.get("stream"):
            raise RequestError(400, "stream is not supported by the embedded server", "stream")
        if body.get("n", 1) != 1:
            raise RequestError(400, "n must be 1", "n")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError(400, "messages must be a non-empty list", "messages")
        messages = [_content(m, i) for i, m in enumerate(messages)]
        schema = response_schema(body.get("response_format"))
        grammar = self._grammar(schema) if schema is not None else None
        ids = self.engine.prompt_ids(messages)
        room = self.engine.n_ctx - len(ids)
        if room < 1:
            what = f"the prompt has {len(ids)} tokens; the context holds {self.engine.n_ctx}"
            raise RequestError(400, what, "messages", "context_length_exceeded")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is None:
            max_tokens = room
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            what = f"max_tokens must be a positive integer, got {max_tokens!r}"
            raise RequestError(400, what, "max_tokens")
        stop = body.get("stop") or []
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop) or len(stop) > 4:
            raise RequestError(400, "stop must be a string or a list of up to 4 strings", "stop")
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise RequestError(400, f"seed must be an integer, got {seed!r}", "seed")
        return Job(
            prompt_ids=ids,
            max_tokens=min(max_tokens, room),
            temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
            top_p=_number(body, "top_p", 1.0, 0.0, 1.0) or 1.0,
            seed=seed,
            stop=stop,
            presence_penalty=_number(body, "presence_penalty", 0.0, -2.0, 2.0),
            frequency_penalty=_number(body, "frequency_penalty", 0.0, -2.0, 2.0),
            grammar=grammar,
        )

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        job = self.job(body)
        fut: Future = Future()
        self.queue.put((job, fut))
        out = fut.result()
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": out.text},
                    "finish_reason": out.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": out.prompt_tokens,
                "completion_tokens": out.completion_tokens,
                "total_tokens": out.prompt_tokens + out.completion_tokens,
            },
        }


def make_handler(service: Service) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the client reuses its connections

        def log_message(self, format: str, *args: Any) -> None:  # no access log
            pass

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, param: str | None = None, code: str | None = None):
            kind = "invalid_request_error" if status < 500 else "server_error"
            self._send(status, {"error": {"message": message, "type": kind, "param": param, "code": code}})

        def do_GET(self) -> None:
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                model = {"id": service.name, "object": "model", "created": 0, "owned_by": "osum-data"}
                self._send(200, {"object": "list", "data": [model]})
            else:
                self._error(404, f"no such path: {self.path}")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self.close_connection = True
                self._error(413, f"request body over {MAX_BODY} bytes")
                return
            raw = self.rfile.read(length)
            if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                self._error(404, f"no such path: {self.path}")
                return
            try:
                body = json.loads(raw)
                if not isinstance(body, dict):
                    raise ValueError("not a JSON object")
            except ValueError as e:
                self._error(400, f"the body is not a JSON object: {e}")
                return
            try:
                self._send(200, service.complete(body))
            except RequestError as e:
                self._error(e.status, e.message, e.param, e.code)
            except Exception as e:  # a failure in the model: this request only
                self._error(500, f"generation failed: {type(e).__name__}: {e}")

    return Handler


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m osum_data.llm.local_server")
    p.add_argument("--model", required=True, help="a .gguf file")
    p.add_argument("--name", required=True, help="the model name the server answers to")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: a free port, printed when ready")
    p.add_argument("--n-ctx", type=int, default=2048)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--quantize", choices=("int8", "float32"), default="int8", help="linear layer weights")
    args = p.parse_args(argv)
    try:
        httpd = ThreadingHTTPServer((args.host, args.port), BaseHTTPRequestHandler)
    except OSError as e:
        print(f"error: cannot listen on {args.host}:{args.port}: {e.strerror} (address already in use?)")
        return 3
    httpd.daemon_threads = True
    import torch

    from osum_data.llm.engine import Engine

    started = time.monotonic()
    engine = Engine(Path(args.model), n_threads=args.threads, n_ctx=args.n_ctx, quantize=args.quantize)
    print(
        f"model loaded in {time.monotonic() - started:.1f} s ({engine.weights} weights, "
        f"{torch.get_num_threads()} thread(s))",
        flush=True,
    )
    httpd.RequestHandlerClass = make_handler(Service(engine, args.name, args.max_batch))
    host, port = httpd.server_address[:2]
    print(f"{READY_PREFIX}http://{host}:{port}/v1", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
