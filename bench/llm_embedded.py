"""The embedded LLM server (torch + llguidance) against the llama.cpp server it replaced, on the same
SmolLM2-135M GGUF, with the same workload: start-up time, and tokens per second for structured
(JSON-schema) chat completions sent 8 at a time, as the LLM stages send them.

    python bench/llm_embedded.py [--requests 24] [--threads 1] [--old]

`--old` also runs llama-cpp-python's server, if it is still installed (it is no longer in
requirements.txt). Besides wall-clock throughput it reports tokens per CPU-second of the server
process: on a shared, busy machine wall time mostly measures the neighbours; CPU time does not.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Literal

import openai
import psutil
from pydantic import BaseModel

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from osum_data.llm.server import HOST, bundled_model, embedded_server, free_port, model_name  # noqa: E402
from osum_data.llm.settings import EmbeddedSettings  # noqa: E402

TEXTS = [
    "I love this sunny day!",
    "My phone broke again, this is awful.",
    "The meeting is at three.",
    "Press one for sales, two for support.",
    "We won the match last night!",
    "The train is delayed by forty minutes.",
]


class Sentiment(BaseModel):
    sentiment: Literal["positive", "negative", "neutral"]
    confidence: float


async def _workload(base_url: str, model: str, n: int, form: str) -> tuple[float, int, int]:
    schema = Sentiment.model_json_schema()
    fmt = (
        {"type": "json_schema", "json_schema": {"name": "Sentiment", "schema": schema}}
        if form == "json_schema"
        else {"type": "json_object", "schema": schema}
    )
    sem = asyncio.Semaphore(8)
    ok = 0
    tokens = 0

    async def one(i: int, api) -> None:
        nonlocal ok, tokens
        async with sem:
            msg = f"Classify the sentiment of this sentence: {TEXTS[i % len(TEXTS)]} (#{i})"
            r = await api.post(
                "/chat/completions",
                body={"model": model, "messages": [{"role": "user", "content": msg}], "max_tokens": 64,
                      "temperature": 0, "seed": i, "response_format": fmt},
                cast_to=openai.types.chat.ChatCompletion,
            )  # fmt: skip
        tokens += r.usage.completion_tokens
        try:
            Sentiment.model_validate_json(r.choices[0].message.content)
            ok += 1
        except ValueError:
            pass

    start = time.monotonic()
    async with openai.AsyncOpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=600) as api:
        await asyncio.gather(*(one(i, api) for i in range(n)))
    return time.monotonic() - start, tokens, ok


def _server_pid(marker: str) -> psutil.Process:
    for p in psutil.Process().children(recursive=True):
        if any(marker in part for part in p.cmdline()):
            return p
    raise RuntimeError(f"no child process running {marker}")


def _measure(name: str, base_url: str, model: str, proc: psutil.Process, n: int, form: str, startup: float):
    cpu0 = sum(proc.cpu_times()[:2])
    wall, tokens, ok = asyncio.run(_workload(base_url, model, n, form))
    cpu = sum(proc.cpu_times()[:2]) - cpu0
    print(
        f"{name:28s} start {startup:6.1f} s | {n} requests in {wall:6.1f} s, {ok}/{n} schema-valid, "
        f"{tokens} tokens: {tokens / wall:6.2f} tok/s wall, {tokens / cpu:6.2f} tok/CPU-s ({cpu:.1f} CPU-s)",
        flush=True,
    )


def run_new(n: int, threads: int | None) -> None:
    start = time.monotonic()
    with embedded_server(EmbeddedSettings(n_threads=threads)) as ep:
        startup = time.monotonic() - start
        _measure("torch + llguidance", ep.base_url, ep.model, _server_pid("osum_data.llm.local_server"), n,
                 "json_schema", startup)  # fmt: skip


def run_old(n: int, threads: int | None) -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        print("llama-cpp-python is not installed: no comparison row")
        return
    model = bundled_model()
    port = free_port()
    name = model_name(model)
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", name,
           "--host", HOST, "--port", str(port), "--n_ctx", "2048"]  # fmt: skip
    if threads:
        cmd += ["--n_threads", str(threads)]
    with tempfile.TemporaryFile() as log:
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        base_url = f"http://{HOST}:{port}/v1"
        try:
            while True:
                try:
                    urllib.request.urlopen(f"{base_url}/models", timeout=2).close()
                    break
                except OSError:
                    time.sleep(0.2)
            startup = time.monotonic() - start
            _measure("llama.cpp (llama-cpp-python)", base_url, model_name(model), psutil.Process(proc.pid), n,
                     "json_object_schema", startup)  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=24)
    p.add_argument("--threads", type=int, default=None, help="default: each server's own default")
    p.add_argument("--old", action="store_true", help="also run llama-cpp-python's server if installed")
    args = p.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    run_new(args.requests, args.threads)
    if args.old:
        run_old(args.requests, args.threads)


if __name__ == "__main__":
    main()
