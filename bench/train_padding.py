"""Trainer data path: padding with duration bucketing vs random batching, loader vs step rate, and
the cost of resuming mid-epoch by replaying the sampler (exact) vs restarting the input (fast).

1. One epoch of batches (same max_duration) from Lhotse's DynamicBucketingSampler and from a
   random-order DynamicCutSampler; padding = 1 - real / padded, for the audio (mel frames) and for
   the LLM sequence (instruction + speech embeddings + target tokens, counted exactly with the
   tokenizer, no audio decoded). Trainers with random batches lose 35-50 % to padding.
2. The DataLoader (audio decode + resampling + log-mel + tokenising, N workers) against training
   steps of the tiny CPU model on the same batches, both as audio-seconds per second. Target: the
   loader >= 3x the step rate, so the accelerator never waits. (For a GPU run compare the loader
   rate to bench/train_gpu.py's audio-seconds/s; pass it with --step-audio-s-per-s.)
3. Resume: a --resume-cuts manifest (cycled demo prompts, metadata only), a checkpoint position
   halfway through its epoch; time to the first batch after it, replaying the bucketing sampler
   (train.resume_data=exact) vs starting the input at the saved position (fast).

    .venv/bin/python bench/train_padding.py [--cuts manifests/demo/asr/cuts.jsonl.gz] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from lhotse import CutSet  # noqa: E402

from osum_data.demo.task_cuts import write_demo_manifest  # noqa: E402
from training.adapters import speech_lengths  # noqa: E402
from training.config import load_config  # noqa: E402
from training.data import make_loader, make_sampler, open_cuts  # noqa: E402
from training.features import HOP  # noqa: E402
from training.model import build_model  # noqa: E402
from training.sequence import PromptFormat  # noqa: E402
from training.train import lr_lambda, to_device  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def padding(sampler, fmt: PromptFormat) -> dict[str, float]:
    frames = padded_frames = tokens = padded_tokens = 0
    batches = cuts = 0
    for batch in sampler:
        f, t = [], []
        for c in batch:
            prefix, suffix = fmt.around_speech(c.custom["instruction"])
            n_frames = c.num_samples // HOP
            n_speech = int(speech_lengths(torch.tensor(n_frames)))
            n_target = len(fmt.encode(c.custom["target"])) + 1
            f.append(n_frames)
            t.append(len(prefix) + n_speech + len(suffix) + n_target)
        frames += sum(f)
        padded_frames += len(f) * max(f)
        tokens += sum(t)
        padded_tokens += len(t) * max(t)
        batches += 1
        cuts += len(f)
    return {
        "audio": 1 - frames / padded_frames,
        "tokens": 1 - tokens / padded_tokens,
        "batches": batches,
        "cuts_per_batch": cuts / batches,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cuts", type=Path, default=REPO / "manifests/demo/asr/cuts.jsonl.gz")
    ap.add_argument("--config", type=Path, default=REPO / "training/configs/tiny.yaml")
    ap.add_argument("--max-duration", type=float, default=100.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--buckets", type=int, default=10)
    ap.add_argument("--batches", type=int, default=30, help="batches timed for loader and step rates")
    ap.add_argument("--step-audio-s-per-s", type=float, help="a GPU step rate to compare the loader with")
    ap.add_argument("--resume-cuts", type=int, default=20000, help="manifest size for the resume timing")
    ap.add_argument("--resume-buffer", type=int, default=1000, help="data.buffer_size for the resume timing")
    args = ap.parse_args()

    manifest = args.cuts
    if not manifest.exists():
        manifest = write_demo_manifest(Path("/tmp/osum_bench_train/cuts.jsonl.gz"), None, max_duration=30.0)
        print(f"{args.cuts} missing (run `make demo`); using the demo corpus directly: {manifest}")
    cfg = load_config(
        args.config, [f"data.max_duration={args.max_duration}", f"data.num_workers={args.workers}"]
    )
    model, tok = build_model(cfg)
    fmt = PromptFormat(tok, cfg.data.chat_template)
    cuts = open_cuts(manifest)
    n = sum(1 for _ in cuts)
    hours = sum(c.duration for c in cuts) / 3600

    print(
        f"manifest {manifest}: {n} cuts, {hours:.3f} h; "
        f"max_duration {args.max_duration} s per batch, {args.buckets} buckets"
    )
    pad = {}
    for name, bucketing in (("bucketing", True), ("random", False)):
        data = cfg.data.model_copy(
            update={"bucketing": bucketing, "num_buckets": args.buckets, "buffer_size": max(n, 1000)}
        )
        pad[name] = padding(make_sampler(cuts, data, seed=0, world_size=1, rank=0, shuffle=True), fmt)
        p = pad[name]
        print(
            f"  {name:9s}: padding audio {p['audio']:6.1%}  tokens {p['tokens']:6.1%}  "
            f"({p['batches']} batches, {p['cuts_per_batch']:.1f} cuts/batch)"
        )
    print(
        f"padding ratio random/bucketing: audio {pad['random']['audio'] / pad['bucketing']['audio']:.1f}x, "
        f"tokens {pad['random']['tokens'] / pad['bucketing']['tokens']:.1f}x"
    )

    # Loader rate: the real DataLoader, warm file cache (one pass first).
    loader = make_loader(cuts, fmt, cfg.data, cfg.seed)
    it = iter(loader)
    batches = [next(it) for _ in range(5)]
    t0 = time.perf_counter()
    batches = [next(it) for _ in range(args.batches)]
    loader_s = time.perf_counter() - t0
    audio = sum(b["audio_seconds"] for b in batches)
    loader_rate = audio / loader_s
    del it

    # Step rate: forward + backward + optimizer of the configured model on the same batches.
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.optim.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.optim))
    model.train()
    for b in batches[:2]:  # warm-up
        model(to_device(b, torch.device("cpu")))["loss"].backward()
        opt.zero_grad()
    t0 = time.perf_counter()
    for b in batches:
        model(to_device(b, torch.device("cpu")))["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
    step_s = time.perf_counter() - t0
    step_rate = audio / step_s
    print(
        f"loader ({args.workers} workers): {loader_rate:.0f} audio-s/s "
        f"({args.batches / loader_s:.1f} batches/s); "
        f"steps ({args.config.name}, CPU): {step_rate:.0f} audio-s/s ({args.batches / step_s:.1f} steps/s)"
    )
    print(f"loader/step rate: {loader_rate / step_rate:.1f}x (target >= 3x)")
    if args.step_audio_s_per_s:
        print(f"loader/GPU step rate: {loader_rate / args.step_audio_s_per_s:.1f}x (target >= 3x)")
    resume_cost(cfg, args.resume_cuts, args.max_duration, args.resume_buffer)


def resume_cost(cfg, n: int, max_duration: float, buffer_size: int) -> None:
    """Seconds to the first batch after a position halfway through an epoch, replaying the sampler
    (exact) vs restarting the input at the saved position (fast), and the cuts of that epoch a fast
    resume does not see (those in the sampler's buffer at the checkpoint)."""
    from osum_data.demo import write_cycled_manifest
    from training.data import CutFilter, PositionedSampler, training_stream

    path = write_cycled_manifest(Path(f"/tmp/osum_bench_train/cycled_{n}.jsonl.gz"), n)
    data = cfg.data.model_copy(
        update={"max_duration": max_duration, "num_buckets": 10, "buffer_size": buffer_size}
    )

    def sampler_from(start=None, fast=False, epochs=1):
        stream = training_stream([str(path)], None, 0, CutFilter(data.max_cut_duration))
        sampler = make_sampler(CutSet(stream), data, seed=0, world_size=1, rank=0, shuffle=True)
        return PositionedSampler(sampler, start, epochs=epochs, stream=stream, fast=fast)

    batches = [(pos, len(cuts)) for pos, cuts in sampler_from()]
    k = len(batches) // 2
    target, consumed = batches[k - 1][0], sum(size for _, size in batches[:k])
    timings, rest = {}, {}
    for name, fast in (("exact", False), ("fast", True)):
        t0 = time.perf_counter()
        it = iter(sampler_from(target, fast, epochs=2))
        next(it)
        timings[name] = time.perf_counter() - t0
        rest[name] = sum(len(c) for p, c in sampler_from(target, fast, epochs=1))
    exact, fast = timings["exact"], timings["fast"]
    print(f"resume after batch {k} of {len(batches)} ({n} cuts, buffer {buffer_size}): first batch after "
          f"{exact:.2f} s replaying (exact) vs {fast:.2f} s restarting the input (fast), "
          f"{exact / fast:.1f}x; fast resume leaves {rest['exact'] - rest['fast']} of the epoch's remaining "
          f"{rest['exact']} cuts unseen ({consumed} were consumed before)")  # fmt: skip


if __name__ == "__main__":
    main()
