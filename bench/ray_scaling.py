"""Ray scaling: the ASR pipeline with 1 and with 2 workers on the same shards, side by side in one
run. Prints the speed-up (target >= 1.8 for 2 workers) end to end and in steady state.

Steady state is read from the finished shards' `done` marker times: the rate over the middle 80%
of shards (first to last decile of completion times), so worker start-up and the tail are left out
without subtracting one noisy timing from another. The input is sized so that every worker has at
least 20 shards."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from common import demo_manifest, timed

from osum_data.run.config import load_pipeline
from osum_data.run.runner import ensure_ray, run_pipeline

REPO = Path(__file__).resolve().parents[1]


def steady_rate(out: Path) -> float:
    """Shards per second between the 10th and the 90th percentile of shard completion times."""
    times = sorted(p.stat().st_mtime for p in (out / "shards").glob("done.*.json"))
    lo, hi = int(len(times) * 0.1), int(len(times) * 0.9)
    return (hi - lo) / max(times[hi] - times[lo], 1e-3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shard-size", type=int, default=100)
    ap.add_argument("--shards-per-worker", type=int, default=20)
    args = ap.parse_args()
    n = args.workers * args.shards_per_worker * args.shard_size
    cfg = load_pipeline(
        REPO / "pipelines/asr.yaml", ["audio_policy.min_sampling_rate=8000", f"shard_size={args.shard_size}"]
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = demo_manifest(tmp / "in.jsonl.gz", n)
        ensure_ray(None, args.workers)
        run_pipeline(cfg, demo_manifest(tmp / "warm.jsonl.gz", 400), tmp / "warm", workers=2, progress=False)
        t1 = timed(lambda: run_pipeline(cfg, manifest, tmp / "w1", workers=1, progress=False))
        tn = timed(lambda: run_pipeline(cfg, manifest, tmp / "wn", workers=args.workers, progress=False))
        same = (tmp / "w1/cuts.jsonl.gz").read_bytes() == (tmp / "wn/cuts.jsonl.gz").read_bytes()
        r1, rn = steady_rate(tmp / "w1"), steady_rate(tmp / "wn")
        shards = -(-n // args.shard_size)
        print(f"cuts: {n} in {shards} shards, cores: {os.cpu_count()}")
        print(f"1 worker : {n / t1:8.1f} cuts/s end to end ({t1:.2f} s), {r1:.2f} shards/s steady")
        w = args.workers
        print(f"{w} workers: {n / tn:8.1f} cuts/s end to end ({tn:.2f} s), {rn:.2f} shards/s steady")
        print(f"speed-up {args.workers} vs 1 workers, end to end: {t1 / tn:.2f}  (target >= 1.8 for 2)")
        print(f"speed-up {args.workers} vs 1 workers, steady state: {rn / r1:.2f}")
        print(f"outputs byte-identical: {same}")


if __name__ == "__main__":
    main()
