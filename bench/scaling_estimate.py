"""Per-core rates of the CPU work that turns a corpus into OSUM training data, measured here on real
speech, and what they mean for OSUM v2's 50.5k hours on a 128-core Ray cluster (README, Scaling).

Measured in one process with one intra-op thread (a Ray worker's share of a machine), in audio
seconds processed per wall second:
- label: the checks and labelling stages every task pipeline starts with (pipelines/asr.yaml:
  text normalisation, duration/cps filters, a full decode check, the 16 kHz audio policy) plus the
  template stage, run by the runner's shard processor on N cuts;
- template: the template stage alone (no audio);
- augment: what the noise augmentation of SGC/SAP materialises per cut: decode + resample to 16 kHz,
  audiomentations background noise (real recorded speech as babble) and a room impulse response,
  16 kHz FLAC encode and write;
- shar: the mix's re-encode of every cut into Lhotse Shar (decode, resample, FLAC, tar).
GPU model labelers (aligners, emotion models) and LLM stages are bounded by their model/endpoint, not
by these CPUs; they are left out (their own benchmarks give their rates).
"""

from __future__ import annotations

import argparse
import io
import os
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from lhotse import CutSet
from mix_common import task_samples

HOURS = 50_500  # OSUM v2's training data
AUGMENTED = 1_500 + 3_400  # SGC 1.5k h noise-augmented, SAP 3.4k h doubled with noise (DESIGN 11)
CORES = 128


def rate_label(manifest: Path, tmp: Path, n: int) -> float:
    from osum_data.run.config import load_pipeline
    from osum_data.run.inputs import iter_shards, scan
    from osum_data.run.shard import ShardProcessor

    repo = Path(__file__).resolve().parents[1]
    cfg = load_pipeline(
        repo / "pipelines/asr.yaml", ["audio_policy.min_sampling_rate=8000", f"shard_size={n}"]
    )
    proc = ShardProcessor(cfg, tmp / "label")
    (shard,) = list(iter_shards(scan(manifest), n, cfg.hash()))
    seconds = sum(c.duration for c in CutSet.from_jsonl_lazy(manifest))
    t0 = time.perf_counter()
    proc.run_shard(shard)
    return seconds / (time.perf_counter() - t0)


def rate_template(manifest: Path) -> float:
    from osum_data.template.builder import template

    cuts = list(CutSet.from_jsonl_lazy(manifest))
    seconds = sum(c.duration for c in cuts)
    t0 = time.perf_counter()
    for c in cuts:
        template(c, task="asr")
    return seconds / (time.perf_counter() - t0)


def rate_augment(manifest: Path, tmp: Path) -> float:
    from audiomentations import AddBackgroundNoise, ApplyImpulseResponse, Compose
    from lhotse import Recording

    from osum_data.demo import SOUNDS_DIR

    rng = np.random.default_rng(0)
    t = np.arange(int(0.4 * 16000)) / 16000
    rir = (rng.standard_normal(len(t)) * np.exp(-t / 0.08)).astype(np.float32)
    rir[0] = 1.0
    sf.write(tmp / "rir.wav", rir / np.abs(rir).max(), 16000)
    babble = []  # real recorded speech as babble noise, copied at 16 kHz once (as a noise set would be)
    for i, wav in enumerate(sorted(SOUNDS_DIR.glob("*.wav"))[:40]):
        sf.write(tmp / f"babble{i}.wav", Recording.from_file(wav).resample(16000).load_audio()[0], 16000)
        babble.append(tmp / f"babble{i}.wav")
    augment = Compose(
        [
            AddBackgroundNoise(sounds_path=babble, min_snr_db=5, max_snr_db=20, p=1.0),
            ApplyImpulseResponse(ir_path=[tmp / "rir.wav"], p=1.0),
        ]
    )
    cuts = list(CutSet.from_jsonl_lazy(manifest))
    seconds = sum(c.duration for c in cuts)
    out = tmp / "augmented"
    out.mkdir()
    t0 = time.perf_counter()
    for c in cuts:
        audio = c.resample(16000).load_audio()[0]
        noisy = augment(samples=audio, sample_rate=16000)
        sf.write(out / f"{c.id}.flac", noisy, 16000, subtype="PCM_16")
    return seconds / (time.perf_counter() - t0)


def rate_shar(manifest: Path, tmp: Path) -> float:
    cuts = list(CutSet.from_jsonl_lazy(manifest))
    seconds = sum(c.duration for c in cuts)
    t0 = time.perf_counter()
    with tarfile.open(tmp / "shar.tar", "w") as tar:
        for c in cuts:
            buf = io.BytesIO()
            sf.write(buf, c.resample(16000).load_audio().T, 16000, format="FLAC", subtype="PCM_16")
            info = tarfile.TarInfo(f"{c.id}.flac")
            info.size = buf.tell()
            buf.seek(0)
            tar.addfile(info, buf)
    return seconds / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cuts", type=int, default=1000)
    ap.add_argument("--efficiency", type=float, default=0.9, help="parallel efficiency assumed at 128 cores")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        raw = task_samples(tmp / "raw.jsonl.gz", args.cuts)
        rates = {
            "label": rate_label(raw, tmp, args.cuts),
            "template": rate_template(raw),
            "augment": rate_augment(raw, tmp),
            "shar": rate_shar(raw, tmp),
        }
    print(
        f"cuts: {args.cuts} real 8 kHz prompts; cores here: {os.cpu_count()}, load {os.getloadavg()[0]:.1f}"
    )
    print("per-core rate (audio hours per core-hour, one thread):")
    for k, v in rates.items():
        print(f"  {k:9s} {v:9.1f}x real time")
    work = {
        "label (checks + template), all hours": HOURS / rates["label"],
        "augment (SGC/SAP noise copies)": AUGMENTED / rates["augment"],
        "template the augmented copies": AUGMENTED / rates["template"],
        "mix to Shar (FLAC re-encode), all hours": (HOURS + AUGMENTED) / rates["shar"],
    }
    total = sum(work.values())
    eff = args.efficiency
    print(f"OSUM v2: {HOURS:,} h, {AUGMENTED:,} h augmented; {CORES} cores at {eff:.0%} parallel efficiency:")
    for k, core_hours in work.items():
        print(f"  {k:42s} {core_hours:9.1f} core-hours -> {core_hours / (CORES * eff):6.2f} h wall")
    print(f"  {'total':42s} {total:9.1f} core-hours -> {total / (CORES * eff):6.2f} h wall")


if __name__ == "__main__":
    main()
