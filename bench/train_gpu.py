"""Training throughput at the real shapes: Whisper-medium encoder + OSUM adapter + Qwen2-7B with LoRA.

Weights are random (built from configs on the GPU, nothing downloaded), the step is the real one:
bf16 autocast, frozen LLM in bf16, LoRA r=8 on q,k,v,o,gate,down, encoder + adapter + LoRA trained
(configs/osum_qwen2_7b.yaml). Batches are synthetic with realistic layout: B utterances of S
seconds, an instruction and a target of fixed token counts. Prints tokens/s, audio-hours per
GPU-hour and MFU (model FLOPs / peak bf16 FLOPs; recomputation by gradient checkpointing is not
counted as useful work). Target MFU >= 45 % on an H100.

    .venv/bin/python bench/train_gpu.py [--seconds 10] [--batch 24] [--steps 10] [--grad-ckpt]
    .venv/bin/python bench/train_gpu.py --tiny-cpu     # smoke test of this script's code path on CPU
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from training.config import load_config  # noqa: E402
from training.model import build_model, count_parameters, speech_lengths  # noqa: E402
from training.sequence import Sample, collate_tokens  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

WHISPER_MEDIUM = dict(
    num_mel_bins=80,
    d_model=1024,
    encoder_layers=24,
    encoder_attention_heads=16,
    encoder_ffn_dim=4096,
    max_source_positions=1500,
)
QWEN2_7B = dict(
    model_type="qwen2",
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    vocab_size=152064,
    max_position_embeddings=32768,
    rope_theta=1e6,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)
TINY_ENC = dict(num_mel_bins=80, d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128)
TINY_LLM = dict(
    model_type="qwen2",
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=1000,
)

PEAK_BF16 = {
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "H200": 989e12,
    "GH200": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
}


def peak_flops(name: str, override: float | None) -> float | None:
    if override:
        return override * 1e12
    for key in sorted(PEAK_BF16, key=len, reverse=True):
        if key in name:
            return PEAK_BF16[key]
    return None


def model_flops(model, batch: dict, enc_positions: int) -> float:
    """Useful FLOPs of one step. Per LLM token: forward 2N, backward through the frozen weights 2N
    (activation gradients only: no weight gradients), plus causal attention; lm_head only on target
    tokens; the trained encoder and adapter 6N per position (forward + both backward halves)."""
    lm = model.causal_lm
    c = lm.config
    n_layers_params = sum(p.numel() for p in lm.get_decoder().layers.parameters())
    mask = batch["attention_mask"]
    tokens = int(mask.sum())
    seq = mask.sum(1).double()
    attn = (
        float((seq**2).sum()) * c.num_hidden_layers * c.hidden_size * 2 * 3
    )  # causal: 2*s^2*d fwd, x3 fwd+bwd
    targets = int((batch["labels"] != -100).sum())
    llm = 4 * n_layers_params * tokens + attn + 4 * c.vocab_size * c.hidden_size * targets
    enc_params = sum(p.numel() for p in model.encoder.layers.parameters())
    d = model.encoder.config.d_model
    enc = (
        6 * enc_params * enc_positions
        + 12 * model.encoder.config.encoder_layers * d * enc_positions** 2 / len(seq)
    )
    enc += (
        6 * model.encoder.conv2.weight.numel() * enc_positions
        + 6 * model.encoder.conv1.weight.numel() * 2 * enc_positions
    )
    speech = int(batch["speech_mask"].sum())
    adapter = (
        6 * sum(p.numel() for p in model.adapter.parameters()) * speech * 2
    )  # convs run at 2x-4x the rate
    return llm + enc + adapter


def synthetic_batch(b: int, seconds: float, prompt: int, target: int, vocab: int, n_mels: int) -> dict:
    frames = int(seconds * 100)
    n_speech = int(speech_lengths(torch.tensor(frames)))
    g = torch.Generator().manual_seed(0)
    samples = [
        Sample(
            prefix=torch.randint(100, vocab, (prompt,), generator=g).tolist(),
            speech_len=n_speech,
            suffix=torch.randint(100, vocab, (5,), generator=g).tolist(),
            target=torch.randint(100, vocab, (target,), generator=g).tolist() + [2],
        )
        for _ in range(b)
    ]
    batch = collate_tokens(samples, pad_id=0)
    batch["mel"] = torch.randn(b, n_mels, frames, generator=g)
    batch["mel_lens"] = torch.full((b,), frames)
    return batch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="audio per utterance")
    ap.add_argument("--batch", type=int, default=24, help="utterances per step")
    ap.add_argument("--prompt-tokens", type=int, default=40, help="chat header + instruction")
    ap.add_argument("--target-tokens", type=int, default=40)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing in encoder and LLM")
    ap.add_argument("--freeze-encoder", action="store_true", help="train adapter + LoRA only")
    ap.add_argument("--peak-tflops", type=float, help="peak bf16 TFLOPS of this GPU if not recognised")
    ap.add_argument(
        "--tiny-cpu", action="store_true", help="tiny shapes on CPU: checks the script, no figures"
    )
    args = ap.parse_args()

    if not args.tiny_cpu and not torch.cuda.is_available():
        print(
            "bench/train_gpu.py needs a CUDA GPU (none found): it measures Whisper-medium + Qwen2-7B "
            "throughput and MFU in bf16. Run it on a GPU machine, or --tiny-cpu to smoke-test the script."
        )
        return 2
    device = torch.device("cpu" if args.tiny_cpu else "cuda")
    parts = ["adapter", "lora"] + ([] if args.freeze_encoder else ["encoder"])
    overrides = [
        "model.encoder.path=null",
        f"model.encoder.config={TINY_ENC if args.tiny_cpu else WHISPER_MEDIUM}",
        "model.llm.path=null",
        f"model.llm.config={TINY_LLM if args.tiny_cpu else QWEN2_7B}",
        "model.llm.tokenizer=unused",
        f"model.llm.dtype={'float32' if args.tiny_cpu else 'bfloat16'}",
        f"model.llm.gradient_checkpointing={args.grad_ckpt}",
        f"model.encoder.gradient_checkpointing={args.grad_ckpt}",
        f"model.train={parts}",
    ]
    if args.tiny_cpu:
        overrides += ["model.adapter.d_model=64", "model.adapter.heads=4", "model.adapter.ffn_dim=128"]
    cfg = load_config(REPO / "training/configs/osum_qwen2_7b.yaml", overrides)
    t0 = time.perf_counter()
    with device:
        model, _ = build_model(cfg, with_tokenizer=False)
    model.to(device).train()
    print(f"built in {time.perf_counter() - t0:.0f} s on {device}: {count_parameters(model)}; trains {parts}")

    vocab = model.causal_lm.config.vocab_size
    batch = synthetic_batch(args.batch, args.seconds, args.prompt_tokens, args.target_tokens, vocab, 80)
    inputs = {k: v.to(device) for k, v in batch.items()}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-5, fused=device.type == "cuda")
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )

    def step() -> None:
        with amp:
            loss = model(inputs)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / args.steps

    tokens = int(batch["attention_mask"].sum())
    audio_s = args.batch * args.seconds
    enc_positions = args.batch * int(args.seconds * 50)
    flops = model_flops(model, batch, enc_positions)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    peak = None if args.tiny_cpu else peak_flops(name, args.peak_tflops)
    print(f"device {name}; batch {args.batch} x {args.seconds:g} s, {tokens} LLM tokens "
          f"({tokens / args.batch:.0f} per sample), grad_ckpt={args.grad_ckpt}")  # fmt: skip
    print(f"step {dt * 1000:.0f} ms: {tokens / dt:,.0f} tokens/s, {audio_s / dt:,.0f} audio-s/s "
          f"= {audio_s / dt:,.0f} audio-hours per GPU-hour, {flops / dt / 1e12:.1f} TFLOPS")  # fmt: skip
    if device.type == "cuda":
        print(f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    if peak:
        print(f"MFU {flops / dt / peak:.1%} of {peak / 1e12:.0f} TFLOPS bf16 (target >= 45% on an H100)")
    elif not args.tiny_cpu:
        print("MFU: unknown peak for this GPU; pass --peak-tflops")
    return 0


if __name__ == "__main__":
    sys.exit(main())
