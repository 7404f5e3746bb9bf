"""Training throughput at OSUM's shapes: Whisper-medium encoder + adapter + Qwen2-7B with LoRA.

Weights are random (built from configs on the GPU, nothing downloaded); the step is the real one:
bf16 autocast, frozen LLM in bf16, LoRA r=8 on q,k,v,o,gate,down, the parts of
configs/osum_qwen2_7b.yaml trained (encoder + adapter + LoRA; --freeze-encoder: adapter + LoRA).
Utterances are not all alike: (duration, target length) pairs are drawn from the demo's
distribution (`--manifest`: a manifest's, batched by the trainer's own Lhotse sampler; default:
the demo ASR manifest's 48 quantiles stored below, batched by an equivalent pure-Python bucketing
under the same hard padded caps, so no Lhotse and no manifest are needed) at 1x and 3x their
durations, with and without gradient checkpointing.

Prints tokens/s, audio-hours per GPU-hour, padding, MFU and peak memory per setting, and first a
one-rank NCCL process-group check (init, all_reduce on the GPU, destroy; skipped on CPU). MFU
counts useful FLOPs only (training/flops.py): per weight 2N forward, +2N input gradient where
gradients flow, +2N weight gradient where it trains, on real frames and tokens (not padding), no
recomputation; the peak is the GPU's dense bf16 peak from training/gpu_peaks.yaml. Target >= 45 %.

On a GPU machine without a package registry (torch and transformers installed, nothing else of
the project's): copy the repository and a folder of wheels built where PyPI is reachable,

    pip download --only-binary=:all: --python-version 3.11 --platform manylinux2014_x86_64 \
        --no-deps -d wheels peft==0.21.2 accelerate==1.16.0 psutil==7.2.2 PyYAML==6.0.3

then there:  pip install --no-index --find-links wheels peft accelerate psutil PyYAML
             python bench/train_gpu.py                 # synthetic lengths, the 2 x 2 grid
    python bench/train_gpu.py [--adapter osum] [--scales 1 3] [--grad-ckpt both|on|off] [--steps 20]
    python bench/train_gpu.py --tiny-cpu --steps 2     # the same code path at tiny shapes on CPU
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from training.adapters import speech_lengths  # noqa: E402
from training.config import load_config  # noqa: E402
from training.flops import peak_flops, step_flops  # noqa: E402
from training.model import build_model, count_parameters, speech_boundary_tokens  # noqa: E402
from training.sequence import Sample, collate_tokens  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

WHISPER_MEDIUM = dict(num_mel_bins=80, d_model=1024, encoder_layers=24, encoder_attention_heads=16,
                      encoder_ffn_dim=4096, max_source_positions=1500)  # fmt: skip
QWEN2_7B = dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
                max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6,
                tie_word_embeddings=False)  # fmt: skip
TINY_ENC = dict(num_mel_bins=80, d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128)
TINY_LLM = dict(model_type="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, vocab_size=1000)  # fmt: skip


# (duration s, target tokens at ~3 UTF-8 bytes per token): 48 quantiles of the demo ASR manifest
# (manifests/demo/asr/cuts.jsonl.gz, 548 Asterisk prompts and long-form windows), by duration.
DEMO_LENGTHS = [(0.61, 1), (0.66, 2), (0.7, 1), (0.72, 2), (0.75, 1), (0.76, 4), (0.79, 2), (0.81, 2),
                (0.83, 3), (0.85, 3), (0.87, 2), (0.89, 2), (0.91, 2), (0.93, 2), (0.95, 4), (0.97, 4),
                (1.0, 3), (1.02, 3), (1.05, 4), (1.08, 3), (1.13, 3), (1.19, 4), (1.24, 3), (1.31, 4),
                (1.4, 5), (1.52, 5), (1.61, 8), (1.7, 9), (1.76, 9), (1.86, 7), (2.01, 7), (2.13, 12),
                (2.26, 11), (2.38, 15), (2.51, 12), (2.66, 12), (2.8, 12), (3.0, 15), (3.17, 16),
                (3.29, 18), (3.52, 18), (3.79, 19), (4.17, 24), (4.75, 23), (5.5, 25), (6.43, 29),
                (10.51, 56), (18.59, 74)]  # fmt: skip


def synthetic_lengths(n: int, seed: int, scale: float = 1.0, max_duration: float = 30.0):
    """n (mel frames, target tokens) drawn with replacement from DEMO_LENGTHS, durations x scale."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        dur, tgt = rng.choice(DEMO_LENGTHS)
        out.append((int(round(min(max_duration, dur * scale) * 100)), tgt))
    return out


def bucket_batches(
    items: list[tuple[int, int]], max_frames: int, max_tokens: int | None, prompt: int, boundary: int,
    seed: int = 0, buffer: int = 2000,
) -> tuple[list[list[tuple[int, int]]], int]:
    """The trainer's batching without Lhotse: buffers of `buffer` items sorted by length, packed
    greedily under the hard padded caps (batch size x longest frames <= max_frames, x longest
    sequence <= max_tokens), batches shuffled. Returns (batches, items skipped alone over a cap)."""
    rng = random.Random(seed)

    def seq(it: tuple[int, int]) -> int:
        return prompt + int(speech_lengths(it[0], boundary)) + it[1] + 1

    def over(n: int, frames: int, tokens: int) -> bool:
        return n * frames > max_frames or (max_tokens is not None and n * tokens > max_tokens)

    batches, skipped = [], 0
    for start in range(0, len(items), buffer):
        chunk = sorted(items[start : start + buffer])
        batch, longest, longest_seq = [], 0, 0
        for it in chunk:
            if over(1, it[0], seq(it)):
                skipped += 1
                continue
            f, t = max(longest, it[0]), max(longest_seq, seq(it))
            if batch and over(len(batch) + 1, f, t):
                batches.append(batch)
                batch, f, t = [], it[0], seq(it)
            batch.append(it)
            longest, longest_seq = f, t
        if batch:
            batches.append(batch)
    rng.shuffle(batches)
    return batches, skipped


def tensors(batch: list[tuple[int, int]], prompt: int, vocab: int, n_mels: int, boundary: int, g) -> dict:
    """Model inputs for one batch of (frames, target tokens): random mel and ids, real lengths."""
    frames = [f for f, _ in batch]
    samples = [
        Sample(prefix=torch.randint(100, vocab, (prompt,), generator=g).tolist(),
               speech_len=int(speech_lengths(torch.tensor(f), boundary)), suffix=[],
               target=torch.randint(100, vocab, (tgt,), generator=g).tolist() + [2])
        for f, tgt in batch
    ]  # fmt: skip
    out = collate_tokens(samples, pad_id=0)
    out["mel"] = torch.randn(len(frames), n_mels, max(frames), generator=g)
    out["mel_lens"] = torch.tensor(frames)
    out["audio_s"] = sum(frames) / 100
    out["padded_frames"] = len(frames) * max(frames)
    return out


def nccl_check() -> str:
    """A one-rank NCCL process group: init, all_reduce a GPU tensor, destroy."""
    if not torch.cuda.is_available():
        return "NCCL check skipped: no CUDA device (CPU run)"
    import socket

    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1,
                            device_id=torch.device("cuda", 0))  # fmt: skip
    try:
        x = torch.full((1024,), 2.0, device="cuda")
        dist.all_reduce(x)
        torch.cuda.synchronize()
        ok = bool((x == 2.0).all())
        version = ".".join(map(str, torch.cuda.nccl.version()))
    finally:
        dist.destroy_process_group()
    return f"NCCL check {'ok' if ok else 'FAILED'}: 1-rank group, all_reduce on cuda:0 (NCCL {version}, " \
           f"{time.perf_counter() - t0:.1f} s)"  # fmt: skip


def demo_lengths(manifest: Path | None = None) -> list[tuple[float, int]]:
    """(duration s, target tokens) of every cut of the demo manifest (`make demo`'s ASR output, or
    the demo corpus templated on the fly); targets are counted at ~3 UTF-8 bytes per token."""
    from lhotse import CutSet

    if manifest is not None and manifest.exists():
        cuts = CutSet.from_jsonl_lazy(manifest)
    else:
        from osum_data.demo.task_cuts import demo_task_cuts

        cuts = demo_task_cuts(None, max_duration=30.0)
    return [(c.duration, 1 + len((c.custom or {}).get("target", "").encode()) // 3) for c in cuts]


def draw_cuts(
    lengths: list[tuple[float, int]], n: int, seed: int, scale: float = 1.0, max_duration: float = 30.0
):
    """n metadata-only cuts whose (duration, target length) are drawn with replacement from
    `lengths` (durations times `scale`, capped at `max_duration`); no audio behind them."""
    from lhotse import CutSet, MonoCut, Recording
    from lhotse.audio import AudioSource

    rng = random.Random(seed)
    cuts = []
    for i in range(n):
        dur, tgt = rng.choice(lengths)
        dur = min(max_duration, round(dur * scale, 2))
        rec = Recording(f"r{i}", [AudioSource("file", [0], "/dev/null")], 16000, int(dur * 16000), dur)
        cuts.append(
            MonoCut(f"c{i}", 0.0, dur, 0, recording=rec, custom={"target": "x" * (3 * tgt), "tgt": tgt})
        )
    return CutSet.from_cuts(cuts)


def make_batches(cuts, cfg, prompt: int, vocab: int, n_mels: int, boundary: int, seed: int = 0) -> list[dict]:
    """Model inputs for the trainer's batches of `cuts`: random mel and token ids, real lengths."""
    from training.data import make_sampler

    g = torch.Generator().manual_seed(seed)
    batches = []
    for batch_cuts in make_sampler(cuts, cfg.data, seed, world_size=1, rank=0, shuffle=True):
        frames = [int(c.duration * 100) for c in batch_cuts]
        samples = [
            Sample(prefix=torch.randint(100, vocab, (prompt,), generator=g).tolist(),
                   speech_len=int(speech_lengths(torch.tensor(f), boundary)), suffix=[],
                   target=torch.randint(100, vocab, (c.custom["tgt"],), generator=g).tolist() + [2])
            for c, f in zip(batch_cuts, frames, strict=True)
        ]  # fmt: skip
        batch = collate_tokens(samples, pad_id=0)
        batch["mel"] = torch.randn(len(frames), n_mels, max(frames), generator=g)
        batch["mel_lens"] = torch.tensor(frames)
        batch["audio_s"] = sum(frames) / 100
        batch["padded_frames"] = len(frames) * max(frames)
        batches.append(batch)
    return batches


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--adapter", choices=["default", "osum"], default="osum")
    ap.add_argument("--max-duration", type=float, help="padded seconds per batch (default: the config's)")
    ap.add_argument("--max-tokens", type=int, help="padded LLM tokens per batch (default: the config's)")
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 3.0], help="duration factors")
    ap.add_argument("--grad-ckpt", choices=["both", "on", "off"], default="both",
                    help="gradient checkpointing in encoder and LLM")  # fmt: skip
    ap.add_argument("--manifest", type=Path, help="lengths of a manifest (lhotse)")
    ap.add_argument("--prompt-tokens", type=int, default=30, help="instruction tokens per sample")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--freeze-encoder", action="store_true", help="train adapter + LoRA only")
    ap.add_argument("--peak-tflops", type=float, help="dense bf16 peak if not in gpu_peaks.yaml")
    ap.add_argument("--tiny-cpu", action="store_true", help="tiny shapes on CPU (no figures)")
    args = ap.parse_args(argv)

    print(nccl_check(), flush=True)
    if not args.tiny_cpu and not torch.cuda.is_available():
        print("bench/train_gpu.py needs a CUDA GPU (none found); --tiny-cpu runs it at tiny shapes.")
        return 2
    device = torch.device("cpu" if args.tiny_cpu else "cuda")
    parts = ["adapter", "lora"] + ([] if args.freeze_encoder else ["encoder"])
    overrides = [
        "model.encoder.path=null", f"model.encoder.config={TINY_ENC if args.tiny_cpu else WHISPER_MEDIUM}",
        "model.llm.path=null", f"model.llm.config={TINY_LLM if args.tiny_cpu else QWEN2_7B}",
        "model.llm.tokenizer=unused", f"model.llm.dtype={'float32' if args.tiny_cpu else 'bfloat16'}",
        f"model.train={parts}", f"model.adapter.type={args.adapter}",
    ]  # fmt: skip
    if args.tiny_cpu:
        overrides += ["model.adapter.heads=4", "model.adapter.ffn_dim=128"]
    if args.max_duration:
        overrides.append(f"data.max_duration={args.max_duration}")
    if args.max_tokens:
        overrides.append(f"data.max_tokens={args.max_tokens}")
    cfg = load_config(REPO / "training/configs/osum_qwen2_7b.yaml", overrides)
    t0 = time.perf_counter()
    with device:
        model, _ = build_model(cfg, with_tokenizer=False)
    model.to(device).train()
    print(f"built in {time.perf_counter() - t0:.0f} s on {device}: {count_parameters(model)}; "
          f"trains {parts}; adapter {args.adapter}")  # fmt: skip
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    found = (args.peak_tflops * 1e12, "--peak-tflops") if args.peak_tflops else peak_flops(name)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-5, fused=device.type == "cuda")
    boundary = speech_boundary_tokens(cfg)
    vocab = model.causal_lm.config.vocab_size
    max_frames = int(round(cfg.data.max_duration * 100))
    ckpts = {"both": [False, True], "on": [True], "off": [False]}[args.grad_ckpt]
    rows = []
    for ckpt in ckpts:
        set_checkpointing(model, ckpt)
        for scale in args.scales:
            n = (args.warmup + args.steps) * 64
            if args.manifest is not None:
                cuts = draw_cuts(demo_lengths(args.manifest), n, 0, scale, cfg.data.max_cut_duration)
                update = {"buffer_size": n, "num_buckets": min(cfg.data.num_buckets, 10)}
                data_cfg = cfg.data.model_copy(update=update)
                batches = make_batches(cuts, cfg.model_copy(update={"data": data_cfg}), args.prompt_tokens,
                                       vocab, cfg.data.n_mels, boundary)  # fmt: skip
            else:
                items = synthetic_lengths(n, seed=0, scale=scale, max_duration=cfg.data.max_cut_duration)
                caps = (max_frames, cfg.data.max_tokens)
                packed, _ = bucket_batches(items, *caps, args.prompt_tokens, boundary)
                g = torch.Generator().manual_seed(0)
                packed = packed[: args.warmup + args.steps]
                batches = [tensors(b, args.prompt_tokens, vocab, cfg.data.n_mels, boundary, g)
                           for b in packed]  # fmt: skip
            batches = batches[: args.warmup + args.steps]
            if len(batches) < args.warmup + args.steps:
                print(f"only {len(batches)} batches from {n} utterances; lower --steps")
                return 2
            r = measure(model, opt, params, batches[: args.warmup], batches[args.warmup :], device)
            r.update(grad_ckpt=ckpt, scale=scale, mfu=r["flops_per_s"] / found[0] if found else None)
            rows.append(r)
            mfu = f"MFU {r['mfu']:.1%}" if r["mfu"] is not None else "MFU n/a"
            print(f"grad_ckpt={ckpt!s:5} durations x{scale:g}: {r['per_step']:.1f} utterances/step, "
                  f"step {r['step_ms']:.0f} ms, {r['tokens_per_s']:,.0f} tokens/s, "
                  f"{r['audio_s_per_s']:,.1f} audio-hours per GPU-hour, padding audio {r['pad_audio']:.1%} "
                  f"tokens {r['pad_tokens']:.1%}, {r['flops_per_s'] / 1e12:.2f} TFLOPS useful, {mfu}, "
                  f"peak memory {r['peak_gib']:.1f} GiB", flush=True)  # fmt: skip
            print("  useful FLOPs by part: " + ", ".join(f"{k} {v:.1%}" for k, v in r["by_part"].items()))
    print(f"device {name}; adapter {args.adapter}; lengths "
          f"{'from ' + str(args.manifest) if args.manifest else 'synthetic (demo quantiles)'}")  # fmt: skip
    if device.type == "cuda":
        if found:
            print(f"MFU against {found[0] / 1e12:.0f} TFLOPS dense bf16 ({found[1]}); target >= 45%")
        else:
            print(f"MFU: {name!r} is not in training/gpu_peaks.yaml; pass --peak-tflops")
    return 0


def set_checkpointing(model, on: bool) -> None:
    """Gradient checkpointing in the encoder's and the LLM's layers (as the config's flags do)."""
    model.encoder.gradient_checkpointing = on
    lm = model.causal_lm
    # transformers 5 renamed gradient_checkpointing_* to activation_checkpointing_*; the GPU
    # machine's transformers may be older.
    new = hasattr(lm, "activation_checkpointing_enable")
    if on:
        if new:
            lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        lm.config.use_cache = False
    elif new:
        lm.activation_checkpointing_disable()
    else:
        lm.gradient_checkpointing_disable()


def measure(model, opt, params, warmup: list[dict], timed: list[dict], device: torch.device) -> dict:
    """Train on `warmup` untimed, then on `timed`; throughput, padding and useful FLOPs."""
    amp = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
           else torch.autocast("cpu", enabled=False))  # fmt: skip
    keys = ("mel", "mel_lens", "input_ids", "speech_mask", "attention_mask", "labels")

    def step(batch) -> None:
        inputs = {k: batch[k].to(device, non_blocking=True) for k in keys}
        with amp:
            loss = model(inputs)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for b in warmup:
        step(b)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for b in timed:
        step(b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    tokens = sum(int(b["attention_mask"].sum()) for b in timed)
    padded_tokens = sum(b["attention_mask"].numel() for b in timed)
    audio_s = sum(b["audio_s"] for b in timed)
    work = [step_flops(model, b) for b in timed]
    flops = sum(w.total for w in work)
    return {
        "per_step": sum(len(b["mel_lens"]) for b in timed) / len(timed),
        "step_ms": dt / len(timed) * 1000,
        "tokens_per_s": tokens / dt,
        "audio_s_per_s": audio_s / dt,
        "pad_audio": 1 - sum(b["audio_s"] * 100 for b in timed) / sum(b["padded_frames"] for b in timed),
        "pad_tokens": 1 - tokens / padded_tokens,
        "flops_per_s": flops / dt,
        "by_part": {k: sum(w.by_part[k] for w in work) / flops for k in work[0].by_part},
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0,
    }


if __name__ == "__main__":
    sys.exit(main())
