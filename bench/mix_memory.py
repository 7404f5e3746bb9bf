"""Peak memory of mixing (fields only: Lhotse Shar without audio) as the corpus grows: 100k and 1M
cuts, each mixed in a fresh process that reports its own peak RSS. Target: 1M within 1.2x of 100k.

Two tasks (asr, sgc; 70/30) with speaker-disjoint dev/test splits, a repeat and a subsample, a
10k-cut shuffle buffer, lineage grouping and duplicate detection over the whole mix: every part of
the mix that could hold the corpus in memory is exercised.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mix_common import task_samples


def child(workdir: str, n: int) -> None:
    from osum_data.mix.build import build_mix
    from osum_data.mix.config import build_mix_config

    work = Path(workdir)
    raw = {
        "audio": "none",
        "shard_size": 10000,
        "tasks": {
            "asr": {"weight": 0.7, "datasets": [str(work / f"asr-{n}.jsonl.gz")]},
            "sgc": {"weight": 0.3, "datasets": [str(work / f"sgc-{n}.jsonl.gz")]},
        },
    }
    t0 = time.perf_counter()
    res = build_mix(build_mix_config(raw), work / f"mix-{n}", progress=False)
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"cuts": n, "out": res.summary["out"], "seconds": seconds, "peak_rss_mb": peak_mb}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--small", type=int, default=100_000)
    ap.add_argument("--large", type=int, default=1_000_000)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (args.small, args.large):
            t0 = time.perf_counter()
            kw = {"distinct_recordings": True}  # fields only: lineage sees n recordings
            asr, sgc = int(n * 0.7), n - int(n * 0.7)
            task_samples(Path(tmp) / f"asr-{n}.jsonl.gz", asr, "asr", speakers=max(50, n // 200), **kw)
            task_samples(Path(tmp) / f"sgc-{n}.jsonl.gz", sgc, "sgc", speakers=max(50, n // 400), **kw)
            print(f"wrote {n} input cuts in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            proc = subprocess.run(
                [sys.executable, __file__, "--child", tmp, str(n)], capture_output=True, text=True, check=True
            )
            results[n] = json.loads(proc.stdout.strip().splitlines()[-1])
            for f in Path(tmp).glob(f"*-{n}.jsonl.gz"):
                f.unlink()
    small, large = results[args.small], results[args.large]
    for r in (small, large):
        print(
            f"{r['cuts']:>9,} cuts: peak RSS {r['peak_rss_mb']:7.1f} MB, {r['seconds']:6.1f} s, "
            f"{r['cuts'] / r['seconds']:,.0f} cuts/s, {r['out']:,} training cuts"
        )
    print(
        f"peak RSS {args.large:,} / {args.small:,}: {large['peak_rss_mb'] / small['peak_rss_mb']:.3f}"
        "  (target <= 1.2)"
    )


if __name__ == "__main__":
    main()
