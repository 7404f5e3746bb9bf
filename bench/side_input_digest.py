"""Cost of the side-input resume key on a noise bank of N clips (default 10,000 WAVs of 5 s, 16 kHz,
16-bit: 1.6 GB): reading the manifest for its audio paths, then either a stat of each file (path,
size, mtime: what `SideInput.digest` uses) or a SHA-256 of each file's bytes (the alternative).

The key is computed by the driver when it loads the pipeline and again by every worker that builds
the stage, so its cost is paid once per worker per run. The content hash is timed with the files in
the page cache (just written): a bank read from disk costs its size over the disk's read rate on
top, which is the larger part on a cold cache.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from osum_data.run.params import SideInput, _audio_files, audio_stat_digest


def make_bank(root: Path, n: int, seconds: float, sr: int = 16000) -> Path:
    rng = np.random.default_rng(0)
    audio_dir = root / "audio"
    audio_dir.mkdir(parents=True)
    manifest = root / "noise.jsonl.gz"
    samples = int(seconds * sr)
    base = (rng.standard_normal(samples) * 0.1).astype(np.float32)
    with gzip.open(manifest, "wt") as f:
        for i in range(n):
            path = audio_dir / f"noise_{i:05d}.wav"
            sf.write(path, np.roll(base, i * 37), sr, subtype="PCM_16")
            rec = {
                "id": path.stem,
                "sources": [{"type": "file", "channels": [0], "source": str(path)}],
                "sampling_rate": sr,
                "num_samples": samples,
                "duration": seconds,
                "channel_ids": [0],
            }
            cut = {"id": path.stem, "start": 0, "duration": seconds, "channel": 0, "recording": rec}
            f.write(json.dumps({**cut, "supervisions": [], "type": "MonoCut"}) + "\n")
    return manifest


def timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def content_digest(files: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for name in files:
        with open(name, "rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clips", type=int, default=10000)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        manifest = make_bank(Path(tmp), args.clips, args.seconds)
        made = time.perf_counter() - t
        size = sum(p.stat().st_size for p in (Path(tmp) / "audio").iterdir())
        st = manifest.stat()
        path = str(manifest.resolve())
        t = time.perf_counter()
        files = _audio_files.__wrapped__(path, st.st_mtime_ns, st.st_size)
        parse = time.perf_counter() - t
        stat = timed(lambda: audio_stat_digest(files))
        content = timed(lambda: content_digest(files), repeat=2)
        _audio_files.cache_clear()
        full = timed(lambda: (_audio_files.cache_clear(), SideInput(manifest).digest))
        print(f"bank: {len(files)} clips of {args.seconds} s, {size / 1e9:.2f} GB (written in {made:.1f} s)")
        print(f"manifest read for audio paths: {parse * 1000:.0f} ms")
        print(f"stat of each file (size, mtime): {stat * 1000:.0f} ms")
        print(f"SHA-256 of each file's bytes (page cache warm): {content * 1000:.0f} ms "
              f"({size / 1e6 / content:.0f} MB/s)")  # fmt: skip
        print(f"SideInput.digest in all (manifest hash + paths + stats): {full * 1000:.0f} ms")


if __name__ == "__main__":
    main()
