"""Augmentation throughput: the `augment` stage in the runner vs the bare loop, and 1 vs 2 workers.

The bare loop is what a script would do with no runner: per cut, decode (with the same lazy
resampling), the same audiomentations chain with the same banks and seeds, and a FLAC encode, in one
process. The stage with 1 worker against it is the runner's per-core efficiency (target >= 0.7); the
stage with 2 workers against 1 is the scaling (target >= 1.8 on 2 free cores). All three run side by
side in one invocation on the same real speech (the Asterisk prompts, 8 kHz -> 16 kHz), with noise
(colored noise made here, 16 and 22.05 kHz) and synthetic RIRs. Rates are printed end to end and in
steady state (shards between the 10th and 90th percentile of completion, leaving out Ray's start-up).
It also measures the SNR of copies without reverberation back from the stored noise and offset.
"""

from __future__ import annotations

import os

# One thread per process on both sides (Ray gives its 1-CPU workers the same), so that "per core"
# compares one core with one core.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from common import demo_manifest, timed
from lhotse import CutSet

from osum_data.augment.bank import AudioBank, fit_length
from osum_data.augment.stage import copy_seed
from osum_data.augment.transforms import build_chain, run_chain
from osum_data.augment.write import fit_peak
from osum_data.corpora import prepare
from osum_data.demo import write_tsv
from osum_data.demo.para import synthetic_rir
from osum_data.run.config import build_config
from osum_data.run.params import SideInput
from osum_data.run.runner import ensure_ray, run_pipeline

SR = 16000
SNR_DB = (5.0, 20.0)
RIR_P = 0.5


def side_inputs(tmp: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    noise_dir, rir_dir = tmp / "noise", tmp / "rirs"
    noise_dir.mkdir()
    rir_dir.mkdir()
    rows = []
    for i, (seconds, rate, exponent) in enumerate([(8, 16000, 1.0), (5, 22050, 2.0), (6, 16000, 0.0)]):
        n = seconds * rate
        spec = np.fft.rfft(rng.standard_normal(n)) / np.maximum(np.fft.rfftfreq(n), 1 / n) ** (exponent / 2)
        noise = np.fft.irfft(spec, n)
        sf.write(noise_dir / f"n{i}.wav", (noise / np.abs(noise).max() * 0.5).astype(np.float32), rate)
        rows.append([f"n{i}", f"n{i}.wav", ""])
    write_tsv(noise_dir / "metadata.tsv", ["id", "audio", "text"], rows)
    rows = []
    for i, rt60 in enumerate((0.3, 0.5, 0.8)):
        sf.write(rir_dir / f"r{i}.wav", synthetic_rir(rt60, 0.8, i), SR)
        rows.append([f"r{i}", f"r{i}.wav", ""])
    write_tsv(rir_dir / "metadata.tsv", ["id", "audio", "text"], rows)
    prepare("tsv", noise_dir, tmp / "noise_cuts")
    prepare("tsv", rir_dir, tmp / "rir_cuts")
    return tmp / "noise_cuts" / "cuts.jsonl.gz", tmp / "rir_cuts" / "cuts.jsonl.gz"


def bare_loop(manifest: Path, noise: Path, rir: Path, out: Path, seed: int = 0) -> int:
    """Decode + the same chain + FLAC encode, cut after cut, in this process."""
    steps = build_chain(
        AudioBank(SideInput(noise), SR, "noise"),
        AudioBank(SideInput(rir), SR, "rir"),
        SNR_DB,
        1.0,
        RIR_P,
        None,
        None,
    )
    out.mkdir()
    n = 0
    for cut in CutSet.from_file(manifest):
        samples = cut.resample(SR).load_audio()[0]
        audio, _ = run_chain(steps, samples, SR, copy_seed(seed, cut.id, 0))
        audio, _ = fit_peak(audio)
        sf.write(out / f"{cut.id}.flac", audio, SR, format="FLAC", subtype="PCM_16")
        n += 1
    return n


def steady_rate(out: Path) -> float:
    times = sorted(p.stat().st_mtime for p in (out / "shards").glob("done.*.json"))
    lo, hi = int(len(times) * 0.1), int(len(times) * 0.9)
    return (hi - lo) / max(times[hi] - times[lo], 1e-3)


def snr_errors(out: Path, noise: Path, limit: int = 60) -> list[float]:
    """|measured - recorded| SNR of copies with noise and no reverberation."""
    noises = CutSet.from_file(noise).to_eager()
    sources = {}
    errors = []
    for cut in CutSet.from_file(out / "cuts.jsonl.gz"):
        aug = (cut.custom or {}).get("augment")
        if aug is None:
            sources[cut.id] = cut
            continue
        if aug["steps"] != ["noise"] or len(errors) >= limit:
            continue
        clean = sources[aug["source_cut_id"]].resample(SR).load_audio()[0].astype(np.float64)
        mix = cut.load_audio()[0].astype(np.float64)
        clip = noises[aug["noise"]["cut_id"]].resample(SR).load_audio().mean(axis=0).astype(np.float64)
        start = aug["noise"]["offset_samples"]
        noise_seg = fit_length(np.tile(clip, -(-(start + mix.size) // clip.size)), start + mix.size)[start:]
        (a, b), *_ = np.linalg.lstsq(np.stack([clean, noise_seg], 1), mix, rcond=None)
        measured = 20 * np.log10(np.sqrt(np.mean((a * clean) ** 2)) / np.sqrt(np.mean((b * noise_seg) ** 2)))
        errors.append(abs(measured - aug["noise"]["snr_db"]))
    return errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shard-size", type=int, default=25)
    ap.add_argument("--shards-per-worker", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=2, help="alternate the three runs; keep each one's best")
    args = ap.parse_args()
    n = 2 * args.shards_per_worker * args.shard_size
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        noise, rir = side_inputs(tmp)
        cfg = build_config(
            {
                "name": "augment-bench",
                "shard_size": args.shard_size,
                "imports": ["osum_data.augment.stage"],
                "stages": [
                    {
                        "stage": "augment",
                        "noise": str(noise),
                        "rir": str(rir),
                        "snr_db": list(SNR_DB),
                        "rir_p": RIR_P,
                    }
                ],
            }
        )
        manifest = demo_manifest(tmp / "in.jsonl.gz", n)
        ensure_ray(None, 2)
        run_pipeline(cfg, demo_manifest(tmp / "warm.jsonl.gz", 100), tmp / "warm", workers=2, progress=False)
        bare_loop(demo_manifest(tmp / "warm_bare.jsonl.gz", 50), noise, rir, tmp / "warm_bare")
        best: dict[str, float] = {}
        steady: dict[str, float] = {}
        for rep in range(args.repeats):  # alternated, so a burst of load elsewhere hits every side
            for name, run in (
                ("bare", lambda d: bare_loop(manifest, noise, rir, d)),
                ("w1", lambda d: run_pipeline(cfg, manifest, d, workers=1, progress=False)),
                ("w2", lambda d: run_pipeline(cfg, manifest, d, workers=2, progress=False)),
            ):
                out = tmp / f"{name}-{rep}"
                t = timed(lambda out=out, run=run: run(out))
                if t < best.get(name, float("inf")):
                    best[name] = t
                    if name != "bare":
                        steady[name] = steady_rate(out) * args.shard_size
        t_bare, t1, t2 = best["bare"], best["w1"], best["w2"]
        r1, r2 = steady["w1"], steady["w2"]
        seconds = sum(c.duration for c in CutSet.from_file(manifest))
        flacs = lambda d: {p.name: p.read_bytes() for p in sorted((tmp / d / "files").rglob("*.flac"))}  # noqa: E731
        same = flacs("w1-0") == flacs("w2-0")
        errors = snr_errors(tmp / "w1-0", noise)
        print(
            f"cuts: {n} ({seconds / 60:.1f} min of speech) in {-(-n // args.shard_size)} shards, "
            f"cores: {os.cpu_count()}"
        )
        print(f"bare loop (1 process) : {n / t_bare:8.1f} cuts/s ({t_bare:.2f} s)")
        print(
            f"augment stage, 1 worker: {n / t1:8.1f} cuts/s end to end ({t1:.2f} s), {r1:8.1f} cuts/s steady"
        )
        print(
            f"augment stage, 2 workers: {n / t2:7.1f} cuts/s end to end ({t2:.2f} s), {r2:8.1f} cuts/s steady"
        )
        print(
            f"stage (1 worker) vs bare loop per core: end to end {t_bare / t1:.2f}, "
            f"steady {r1 * t_bare / n:.2f}  (target >= 0.7)"
        )
        print(f"2 vs 1 workers: end to end {t1 / t2:.2f}, steady {r2 / r1:.2f}  (target >= 1.8)")
        print(f"copies byte-identical for 1 and 2 workers: {same}")
        print(
            f"SNR error over {len(errors)} noise-only copies: max {max(errors):.4f} dB, "
            f"mean {np.mean(errors):.4f} dB"
        )
        print(
            f"(measured at {time.strftime('%H:%M:%S')}; the machine may be shared: ratios are side by side)"
        )


if __name__ == "__main__":
    main()
