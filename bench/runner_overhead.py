"""Runner overhead: the ASR pipeline on Ray (1 worker) vs a bare single-process loop doing the same
per-shard work (decode, stages, write). Prints cuts/s of both and their ratio (target >= 0.7).

A Ray run pays a fixed start-up per worker (a new process importing lhotse, which imports torch:
about 2 s); it is measured on a one-shard input and reported apart, so the ratio is shown both
with it and in steady state."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from common import demo_manifest, timed

from osum_data.run.config import load_pipeline
from osum_data.run.inputs import iter_shards, scan
from osum_data.run.runner import ensure_ray, run_pipeline
from osum_data.run.shard import ShardProcessor

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cuts", type=int, default=20000)
    args = ap.parse_args()
    cfg = load_pipeline(REPO / "pipelines/asr.yaml", ["audio_policy.min_sampling_rate=8000"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = demo_manifest(tmp / "in.jsonl.gz", args.cuts)

        def bare() -> None:
            proc = ShardProcessor(cfg, tmp / "bare")
            (tmp / "bare" / "shards").mkdir(parents=True, exist_ok=True)
            for shard in iter_shards(scan(manifest), cfg.shard_size, cfg.hash()):
                proc.run_shard(shard)

        ensure_ray(None, 2)
        # Warm both paths once (imports, prompt pools, Ray worker start-up) on a small input.
        small = demo_manifest(tmp / "small.jsonl.gz", 400)
        run_pipeline(cfg, small, tmp / "warm", workers=1, progress=False)
        one_shard = demo_manifest(tmp / "one.jsonl.gz", 1)
        t_start = timed(lambda: run_pipeline(cfg, one_shard, tmp / "one", workers=1, progress=False))
        t_bare = timed(bare)
        t_ray = timed(lambda: run_pipeline(cfg, manifest, tmp / "ray", workers=1, progress=False))
        shutil.rmtree(tmp / "ray")
        print(f"cuts: {args.cuts}, shard_size: {cfg.shard_size}")
        print(f"bare loop : {args.cuts / t_bare:8.1f} cuts/s ({t_bare:.2f} s)")
        print(f"ray runner: {args.cuts / t_ray:8.1f} cuts/s ({t_ray:.2f} s, 1 worker, incl. start-up)")
        print(f"start-up (one-cut run): {t_start:.2f} s")
        print(f"ratio runner/bare per worker, incl. start-up: {t_bare / t_ray:.2f}  (target >= 0.7)")
        steady = t_bare / (t_ray - min(t_start, 0.5 * t_ray))
        print(f"ratio runner/bare per worker, start-up excluded: {steady:.2f}")


if __name__ == "__main__":
    main()
