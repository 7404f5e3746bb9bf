"""Mixing to Lhotse Shar with the audio re-encoded (16 kHz FLAC) against the I/O floor, and 1 vs 2
workers, side by side in one run (both sides see the same load on a shared machine).

- floor: a bare loop in one process over the same cuts: load (decode + resample to 16 kHz with
  lhotse), encode FLAC, write into a tar; no planning, no Ray, no manifests.
- mix: `osum-data mix` with `audio: flac` (planning, splits, the shar_write stage on Ray, gather),
  with 1 and with 2 workers. Per core: mix(1 worker) / floor, target >= 0.7. Scaling: mix(2) / mix(1),
  target >= 1.8; end to end and over the Shar-writing phase's steady state (done-marker times of
  its middle 80% of shards, leaving worker start-up and the tail out).
"""

from __future__ import annotations

import argparse
import io
import os
import tarfile
import tempfile
import time
from pathlib import Path

import soundfile as sf
from lhotse import CutSet
from mix_common import task_samples

from osum_data.mix.build import build_mix
from osum_data.mix.config import build_mix_config
from osum_data.run.runner import ensure_ray


def floor_loop(manifest: Path, out: Path) -> float:
    """Seconds for: each cut decoded, resampled to 16 kHz, FLAC-encoded, appended to a tar. One
    intra-op thread, like a Ray worker (Ray sets OMP_NUM_THREADS=1): a per-core floor."""
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    with tarfile.open(out, "w") as tar:
        for cut in CutSet.from_jsonl_lazy(manifest):
            audio = cut.resample(16000).load_audio()
            buf = io.BytesIO()
            sf.write(buf, audio.T, 16000, format="FLAC", subtype="PCM_16")
            info = tarfile.TarInfo(f"{cut.id}.flac")
            info.size = buf.tell()
            buf.seek(0)
            tar.addfile(info, buf)
    return time.perf_counter() - t0


def steady_rate(run_dir: Path, shard_size: int) -> float:
    times = sorted(p.stat().st_mtime for p in (run_dir / "shards").glob("done.*.json"))
    lo, hi = int(len(times) * 0.1), int(len(times) * 0.9)
    return (hi - lo) * shard_size / max(times[hi] - times[lo], 1e-3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cuts", type=int, default=20000)
    ap.add_argument("--shard-size", type=int, default=250)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = task_samples(tmp / "asr.jsonl.gz", args.cuts)
        hours = sum(c.duration for c in CutSet.from_jsonl_lazy(manifest)) / 3600
        cfg = build_mix_config(
            {
                "audio": "flac",
                "shard_size": args.shard_size,
                "splits": {"dev": 0.0, "test": 0.0},  # every cut goes to train: the same cuts as the floor
                "tasks": {"asr": {"datasets": [str(manifest)]}},
            }
        )
        ensure_ray(None, 2)
        warm = task_samples(tmp / "warm.jsonl.gz", 200)
        build_mix(
            build_mix_config({"audio": "flac", "tasks": {"asr": {"datasets": [str(warm)]}}}),
            tmp / "warm",
            workers=2,
            progress=False,
        )
        t_floor = floor_loop(manifest, tmp / "floor.tar")
        t0 = time.perf_counter()
        build_mix(cfg, tmp / "w1", workers=1, progress=False)
        t1 = time.perf_counter() - t0
        t0 = time.perf_counter()
        build_mix(cfg, tmp / "w2", workers=2, progress=False)
        t2 = time.perf_counter() - t0
        s1, s2 = (
            steady_rate(tmp / "w1" / "run", args.shard_size),
            steady_rate(tmp / "w2" / "run", args.shard_size),
        )
        same = all(
            p.read_bytes() == (tmp / "w2" / p.relative_to(tmp / "w1")).read_bytes()
            for p in (tmp / "w1" / "train").iterdir()
        )
        n = args.cuts
        print(
            f"cuts: {n} ({hours:.2f} h of 8 kHz speech -> 16 kHz FLAC), cores: {os.cpu_count()}, "
            f"load average before: {os.getloadavg()[0]:.1f}"
        )
        print(f"floor (decode+resample+FLAC+tar, 1 process): {n / t_floor:8.1f} cuts/s ({t_floor:.1f} s)")
        print(
            f"mix, 1 worker : {n / t1:8.1f} cuts/s end to end ({t1:.1f} s), Shar phase steady {s1:.1f} cuts/s"
        )
        print(
            f"mix, 2 workers: {n / t2:8.1f} cuts/s end to end ({t2:.1f} s), Shar phase steady {s2:.1f} cuts/s"
        )
        print(
            f"per core, mix (1 worker) vs floor: end to end {t_floor / t1:.2f}, steady {s1 * t_floor / n:.2f}"
            "  (target >= 0.7)"
        )
        print(f"2 vs 1 workers: end to end {t1 / t2:.2f}, steady {s2 / s1:.2f}  (target >= 1.8)")
        print(f"Shar byte-identical for 1 and 2 workers: {same}")


if __name__ == "__main__":
    main()
