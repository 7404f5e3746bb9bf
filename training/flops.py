"""Useful FLOPs of a training step, counted per part and per weight, and GPU peak FLOPS.

MFU = useful FLOPs / time / peak. Useful means the work the step must do on the real (unpadded)
audio frames and tokens, with backward counted only where it happens:

- a matmul with a weight W (Linear, Conv1d, attention projections) costs 2|W| per output position
  forward; backward costs 2|W| for the input gradient when anything before it trains, and 2|W|
  for the weight gradient when W itself trains. A trained part is therefore 6N, a frozen part
  that gradients flow through (the LLM under LoRA) 4N, and a frozen part with nothing trainable
  before it (a frozen encoder under a trained adapter) 2N: counting 6N there overstated MFU;
- attention scores and their use cost 4·s²·d per layer forward (2·s²·d under a causal mask,
  `causal_half`), twice that backward when gradients flow through;
- the LM head runs on target positions only (the model computes logits there alone);
- recomputation by gradient checkpointing is not useful work and is not counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

PEAKS_FILE = Path(__file__).with_name("gpu_peaks.yaml")


@cache
def peak_table() -> list[tuple[re.Pattern, float, str]]:
    import yaml

    rows = yaml.safe_load(PEAKS_FILE.read_text(encoding="utf-8"))["gpus"]
    return [(re.compile(r["match"], re.IGNORECASE), float(r["bf16_tflops"]) * 1e12, r["name"]) for r in rows]


def peak_flops(device_name: str) -> tuple[float, str] | None:
    """(dense bf16 peak FLOPS, the table's name for it) of a `torch.cuda.get_device_name()`; the
    first matching row wins (variants such as NVL and PCIe are listed before the SXM part)."""
    for pattern, peak, name in peak_table():
        if pattern.search(device_name):
            return peak, name
    return None


@dataclass
class Work:
    """FLOPs of one step by part, plus the totals."""

    by_part: dict[str, float]

    @property
    def total(self) -> float:
        return sum(self.by_part.values())


def _weights(module: nn.Module) -> list[tuple[int, bool]]:
    """(elements, trainable) of each matmul weight in `module`: Linear and Conv1d weights and
    nn.MultiheadAttention's packed input projection. Biases and norms are not matmuls."""
    out = []
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Conv1d):
            out.append((m.weight.numel(), m.weight.requires_grad))
        elif isinstance(m, nn.MultiheadAttention) and m.in_proj_weight is not None:
            out.append((m.in_proj_weight.numel(), m.in_proj_weight.requires_grad))
    return out


def _linear_flops(module: nn.Module, positions: float, input_grad: bool) -> tuple[float, bool]:
    """Forward + backward FLOPs of every weight in `module` applied at `positions`; also whether
    anything in it trains (so gradients flow below the next part)."""
    total, trains = 0.0, False
    for n, trainable in _weights(module):
        total += 2 * n * positions * (1 + int(input_grad) + int(trainable))
        trains |= trainable
    return total, trains


def _attention(layers: int, width: int, lengths: list[int], backward: bool, causal: bool) -> float:
    fwd = layers * 4 * width * sum(s * s for s in lengths) * (0.5 if causal else 1.0)
    return fwd * (3 if backward else 1)


def _trains(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def step_flops(model: Any, batch: dict[str, Any], causal_half: bool = True) -> Work:
    """Useful FLOPs of one forward + backward of `model` (a SpeechLLM) on `batch` (model inputs:
    mel_lens, attention_mask, labels). `causal_half`: count the LLM's causal attention as half a
    full square (the work a causal kernel does); False counts the full square, as PyTorch's
    FlopCounterMode does."""
    from training.adapters import conv_out

    by_part: dict[str, float] = {}
    frames = [int(x) for x in batch["mel_lens"]]

    # Encoder: conv1 at the mel frame rate (its input, the mel, needs no gradient), the rest at half.
    enc = model.encoder
    enc_trains = _trains(enc)
    enc_pos = [int(conv_out(torch.tensor(f), 2)) for f in frames]
    f1, _ = _linear_flops(enc.conv1, sum(frames), input_grad=False)
    rest, _ = _linear_flops(nn.ModuleList([enc.conv2, enc.layers]), sum(enc_pos), input_grad=enc_trains)
    attn = _attention(len(enc.layers), enc.config.d_model, enc_pos, enc_trains, causal=False)
    by_part["encoder"] = f1 + rest + attn
    grads = enc_trains  # whether gradients flow into what comes next

    # Adapter: its convs run at 1x, 1/2 and 1/4 of the encoder rate, everything after at 1/4.
    ad = model.adapter
    total, lens = 0.0, list(enc_pos)
    for conv in ad.convs:
        lens = [int(conv_out(torch.tensor(n), conv.stride[0])) for n in lens]
        f, t = _linear_flops(conv, sum(lens), input_grad=grads)
        total, grads = total + f, grads or t
    post = ad.post_conv_modules()
    f, _ = _linear_flops(post, sum(lens), input_grad=grads)
    total += f + _attention(ad.num_layers, ad.d_model, lens, grads or _trains(post), causal=False)
    by_part["adapter"] = total
    grads = grads or _trains(ad)

    # LLM: every real token through the decoder layers; the LM head on target positions only.
    lm = model.causal_lm
    backward = grads or _trains(lm)
    tokens = [int(x) for x in batch["attention_mask"].sum(1)]
    f, _ = _linear_flops(lm.get_decoder().layers, sum(tokens), input_grad=backward)
    c = lm.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    f += _attention(
        c.num_hidden_layers, c.num_attention_heads * head_dim, tokens, backward, causal=causal_half
    )
    by_part["llm"] = f
    targets = int((batch["labels"][:, 1:] != -100).sum())
    by_part["lm_head"], _ = _linear_flops(lm.get_output_embeddings(), targets, input_grad=backward)
    return Work(by_part)
