"""LLM client throughput: the achieved request rate vs the bound concurrency / latency, against a local
OpenAI-compatible server that answers every request after a fixed latency (target >= 0.9x), then the
rate of the cached re-run (zero requests) against the uncached one. Both are measured in this run.

The server runs in its own process so that it does not share the client's interpreter lock.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

from latency_server import MODEL, serve
from pydantic import BaseModel

from osum_data.llm import LLMClient, LLMRequest, LLMSettings


class Answer(BaseModel):
    answer: str


def measure(concurrency: int, latency_s: float, n: int) -> dict:
    """Uncached run, then cached re-run by a fresh client (a new worker), against a fresh server."""
    ctx = mp.get_context("spawn")
    port_q, count, stop = ctx.Queue(), ctx.Value("i", 0), ctx.Event()
    server = ctx.Process(target=serve, args=(latency_s, port_q, count, stop), daemon=True)
    server.start()
    port = port_q.get(timeout=60)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            settings = LLMSettings(
                base_url=f"http://127.0.0.1:{port}/v1",
                model=MODEL,
                concurrency=concurrency,
                cache_dir=Path(tmp) / "cache",
            )
            reqs = [
                LLMRequest(
                    id=f"cut-{i}", messages=[{"role": "user", "content": f"utterance {i}"}], schema=Answer
                )
                for i in range(n)
            ]
            warm = [LLMRequest(id="warm", messages=[{"role": "user", "content": "warm-up"}], schema=Answer)]
            LLMClient(settings).run(warm)  # imports, first connection

            client = LLMClient(settings)
            t0 = time.perf_counter()
            results = client.run(reqs)
            t_uncached = time.perf_counter() - t0
            assert all(r.ok for r in results), "every benchmark request must succeed"
            time.sleep(0.2)
            sent = count.value

            t0 = time.perf_counter()
            again = LLMClient(settings).run(reqs)
            t_cached = time.perf_counter() - t0
            assert all(r.ok and r.cached for r in again)
            time.sleep(0.2)
            sent_again = count.value - sent
    finally:
        stop.set()
        server.join(10)
    return {
        "bound": concurrency / latency_s,
        "rate": n / t_uncached,
        "rate_cached": n / t_cached,
        "t_uncached": t_uncached,
        "t_cached": t_cached,
        "sent": client.stats.requests,
        "sent_again": sent_again,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--latency-ms", type=float, default=500.0, help="a fast real LLM answer: ~0.5-5 s")
    ap.add_argument("--requests", type=int, default=640)
    ap.add_argument("--no-stress", action="store_true", help="skip the 100 ms stress row")
    args = ap.parse_args()
    rows = [("headline", args.concurrency, args.latency_ms, args.requests)]
    if not args.no_stress:  # a latency no real LLM has: shows the client's own per-request cost
        rows.append(("stress", 16, 100.0, 800))
    for name, conc, lat_ms, n in rows:
        m = measure(conc, lat_ms / 1000, n)
        print(f"[{name}] requests: {n}, concurrency: {conc}, server latency: {lat_ms:.0f} ms")
        print(f"  bound (concurrency / latency): {m['bound']:8.1f} req/s")
        print(
            f"  achieved, uncached           : {m['rate']:8.1f} req/s "
            f"({m['t_uncached']:.2f} s, {m['sent']} sent)"
        )
        print(
            f"  cached re-run                : {m['rate_cached']:8.1f} req/s "
            f"({m['t_cached']:.2f} s, {m['sent_again']} sent)"
        )
        target = "  (target >= 0.9)" if name == "headline" else ""
        print(f"  ratio achieved/bound: {m['rate'] / m['bound']:.2f}{target}")
        print(f"  ratio cached/uncached: {m['rate_cached'] / m['rate']:.1f}x")


if __name__ == "__main__":
    main()
