"""Training throughput at OSUM's shapes: Whisper-medium encoder + adapter + Qwen2-7B with LoRA.

Weights are random (built from configs on the GPU, nothing downloaded); the step is the real one:
bf16 autocast, frozen LLM in bf16, LoRA r=8 on q,k,v,o,gate,down, the parts of
configs/osum_qwen2_7b.yaml trained (encoder + adapter + LoRA; --freeze-encoder: adapter + LoRA).
Utterances are not all alike: (duration, target length) pairs are drawn from the demo manifest's
distribution (real prompts; --scale stretches durations) and batched by the trainer's own bucketing
sampler under data.max_duration / data.max_tokens, so padding costs what it costs in training.

Prints tokens/s, audio-hours per GPU-hour, padding, MFU and peak memory. MFU counts useful FLOPs
only (training/flops.py): per weight 2N forward, +2N input gradient where gradients flow, +2N
weight gradient where it trains (a frozen encoder is 2N, not 6N), on real frames and tokens (not
padding), no recomputation; the peak is the GPU's dense bf16 peak from training/gpu_peaks.yaml
(H100 NVL 835 TFLOPS, not the SXM part's 989). Target: MFU >= 45 %.

    .venv/bin/python bench/train_gpu.py [--adapter osum] [--max-duration 39] [--steps 20] [--grad-ckpt]
    .venv/bin/python bench/train_gpu.py --tiny-cpu     # the same code path at tiny shapes on CPU
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from training.config import load_config  # noqa: E402
from training.data import make_sampler  # noqa: E402
from training.flops import peak_flops, step_flops  # noqa: E402
from training.model import build_model, count_parameters, speech_boundary_tokens, speech_lengths  # noqa: E402
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


def demo_lengths(manifest: Path | None = None) -> list[tuple[float, int]]:
    """(duration s, target tokens) of every cut of the demo manifest (`make demo`'s ASR output, or
    the demo corpus templated on the fly); targets are counted at ~3 UTF-8 bytes per token."""
    from lhotse import CutSet

    if manifest is not None and manifest.exists():
        cuts = CutSet.from_jsonl_lazy(manifest)
    else:
        from training.demo import demo_task_cuts

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
    ap.add_argument(
        "--scale", type=float, default=1.0, help="stretch the demo durations (they are short prompts)"
    )
    ap.add_argument("--manifest", type=Path, default=REPO / "manifests/demo/asr/cuts.jsonl.gz")
    ap.add_argument("--prompt-tokens", type=int, default=30, help="instruction tokens per sample")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing in encoder and LLM")
    ap.add_argument("--freeze-encoder", action="store_true", help="train adapter + LoRA only")
    ap.add_argument(
        "--peak-tflops", type=float, help="dense bf16 peak of this GPU if gpu_peaks.yaml lacks it"
    )
    ap.add_argument(
        "--tiny-cpu", action="store_true", help="tiny shapes on CPU: checks the script, no figures"
    )
    args = ap.parse_args(argv)

    if not args.tiny_cpu and not torch.cuda.is_available():
        print(
            "bench/train_gpu.py needs a CUDA GPU (none found); --tiny-cpu runs the same code at tiny shapes."
        )
        return 2
    device = torch.device("cpu" if args.tiny_cpu else "cuda")
    parts = ["adapter", "lora"] + ([] if args.freeze_encoder else ["encoder"])
    overrides = [
        "model.encoder.path=null", f"model.encoder.config={TINY_ENC if args.tiny_cpu else WHISPER_MEDIUM}",
        "model.llm.path=null", f"model.llm.config={TINY_LLM if args.tiny_cpu else QWEN2_7B}",
        "model.llm.tokenizer=unused", f"model.llm.dtype={'float32' if args.tiny_cpu else 'bfloat16'}",
        f"model.llm.gradient_checkpointing={args.grad_ckpt}",
        f"model.encoder.gradient_checkpointing={args.grad_ckpt}",
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

    lengths = demo_lengths(args.manifest)
    n = (args.warmup + args.steps) * 64
    cuts = draw_cuts(lengths, n, seed=0, scale=args.scale, max_duration=cfg.data.max_cut_duration)
    data_cfg = replace(cfg.data, buffer_size=n, num_buckets=min(cfg.data.num_buckets, 10))
    vocab = model.causal_lm.config.vocab_size
    batches = make_batches(cuts, replace(cfg, data=data_cfg), args.prompt_tokens, vocab, cfg.data.n_mels,
                           speech_boundary_tokens(cfg))  # fmt: skip
    batches = batches[: args.warmup + args.steps]
    if len(batches) < args.warmup + args.steps:
        print(f"only {len(batches)} batches from {n} utterances; lower --steps or raise --scale")
        return 2
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-5, fused=device.type == "cuda")
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    keys = ("mel", "mel_lens", "input_ids", "speech_mask", "attention_mask", "labels")

    def step(batch) -> None:
        inputs = {k: batch[k].to(device, non_blocking=True) for k in keys}
        with amp:
            loss = model(inputs)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for b in batches[: args.warmup]:
        step(b)
    timed = batches[args.warmup :]
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
    pad_audio = 1 - sum(b["audio_s"] * 100 for b in timed) / sum(b["padded_frames"] for b in timed)
    work = [step_flops(model, b) for b in timed]
    flops = sum(w.total for w in work)
    by_part = {k: sum(w.by_part[k] for w in work) / flops for k in work[0].by_part}
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    per_step = sum(len(b["mel_lens"]) for b in timed) / len(timed)
    print(f"device {name}; {len(timed)} steps of {per_step:.1f} utterances (durations from "
          f"{len(lengths)} demo cuts x {args.scale:g}); grad_ckpt={args.grad_ckpt}")  # fmt: skip
    print(f"padding: audio {pad_audio:.1%}, tokens {1 - tokens / padded_tokens:.1%}")
    print(f"step {dt / len(timed) * 1000:.0f} ms: {tokens / dt:,.0f} tokens/s, {audio_s / dt:,.1f} "
          f"audio-s/s = {audio_s / dt:,.1f} audio-hours per GPU-hour, "
          f"{flops / dt / 1e12:.2f} TFLOPS useful")  # fmt: skip
    print("useful FLOPs by part: " + ", ".join(f"{k} {v:.1%}" for k, v in by_part.items()))
    if device.type == "cuda":
        print(f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
        found = (args.peak_tflops * 1e12, "--peak-tflops") if args.peak_tflops else peak_flops(name)
        if found:
            peak, which = found
            print(
                f"MFU {flops / dt / peak:.1%} of {peak / 1e12:.0f} TFLOPS dense bf16 ({which}); target >= 45%"
            )
        else:
            print(f"MFU: {name!r} is not in training/gpu_peaks.yaml; pass --peak-tflops")
    return 0


if __name__ == "__main__":
    sys.exit(main())
