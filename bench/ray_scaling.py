"""Ray scaling: the ASR pipeline with 1 and with N workers on the same shards. Prints the speed-up
(target >= 1.8 for 2 workers)."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from common import demo_manifest, timed

from osum_data.run.config import load_pipeline
from osum_data.run.runner import ensure_ray, run_pipeline

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cuts", type=int, default=4000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    cfg = load_pipeline(REPO / "pipelines/asr.yaml", ["audio_policy.min_sampling_rate=8000"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = demo_manifest(tmp / "in.jsonl.gz", args.cuts)
        ensure_ray(None, args.workers)
        run_pipeline(
            cfg,
            demo_manifest(tmp / "small.jsonl.gz", 400),
            tmp / "warm",
            workers=args.workers,
            progress=False,
        )
        one = demo_manifest(tmp / "one.jsonl.gz", 1)
        s1 = timed(lambda: run_pipeline(cfg, one, tmp / "o1", workers=1, progress=False))
        sn = timed(lambda: run_pipeline(cfg, one, tmp / "on", workers=args.workers, progress=False))
        t1 = timed(lambda: run_pipeline(cfg, manifest, tmp / "w1", workers=1, progress=False))
        tn = timed(lambda: run_pipeline(cfg, manifest, tmp / "wn", workers=args.workers, progress=False))
        same = (tmp / "w1/cuts.jsonl.gz").read_bytes() == (tmp / "wn/cuts.jsonl.gz").read_bytes()
        print(f"cuts: {args.cuts}, cores: {os.cpu_count()}")
        print(f"1 worker : {args.cuts / t1:8.1f} cuts/s ({t1:.2f} s)")
        print(f"{args.workers} workers: {args.cuts / tn:8.1f} cuts/s ({tn:.2f} s)")
        print(f"start-up (one-cut run): {s1:.2f} s with 1 worker, {sn:.2f} s with {args.workers}")
        print(f"speed-up {args.workers} vs 1 workers, incl. start-up: {t1 / tn:.2f}  (target >= 1.8 for 2)")
        print(f"speed-up {args.workers} vs 1 workers, steady state: {(t1 - s1) / max(tn - sn, 1e-9):.2f}")
        print(f"outputs byte-identical: {same}")


if __name__ == "__main__":
    main()
