"""Evaluation during training: teacher-forced dev loss per task, and generation on a small dev
subset scored like `osum-decode` (WER/CER per task, label accuracy beside the majority-class
baseline, SRWT timestamp error, STTC answer F1), because a falling loss can hide a model that
answers every gender question with the majority label.

Both are collectives under torchrun: every rank evaluates its share of the batches, statistics are
summed and decoded rows gathered. Generation runs under a forked RNG, so evaluating leaves the
training run's random streams (and an exact resume) untouched.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from training.config import Config
from training.distributed import Dist
from training.metrics import task_metrics
from training.sequence import PromptFormat
from training.stats import Stats

MODEL_KEYS = ("mel", "mel_lens", "input_ids", "speech_mask", "attention_mask", "labels")
DECODE_KEYS = ("mel", "mel_lens", "input_ids", "speech_mask", "attention_mask")


def autocast(cfg: Config, device: torch.device):
    """bf16 autocast on GPU (no loss scaling needed, unlike fp16's NaNs); fp32 on CPU by default."""
    p = cfg.train.precision
    if p == "bf16" or (p == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(
    batch: dict[str, Any], device: torch.device, keys: tuple[str, ...] = MODEL_KEYS
) -> dict[str, Any]:
    """Model inputs on the device; from pinned memory (GPU runs) the copies are asynchronous."""
    return {k: batch[k].to(device, non_blocking=True) for k in keys if k in batch}


def task_keys() -> list[str]:
    from osum_data.tasks import registry

    return list(registry().all_keys)


@torch.no_grad()
def dev_loss(wrapped: torch.nn.Module, loader, cfg: Config, d: Dist) -> dict[str, Any]:
    wrapped.eval()
    stats = Stats(task_keys(), d.device)
    for batch in loader:
        with autocast(cfg, d.device):
            out = wrapped(to_device(batch, d.device))
        stats.add(batch, out)
    wrapped.train()
    r = stats.reduce()
    return {
        "dev_loss": r["loss"],
        "dev_loss_by_task": r["loss_by_task"],
        "dev_cuts": int(r["cuts"]),
        # every rank reads the whole dev manifest and skips the same cuts: no reduction needed
        "dev_skipped": dict(loader.cut_filter.counts),
    }


def decode_rows(
    model: Any, loader, fmt: PromptFormat, cfg: Config, device: torch.device, synced: bool
) -> list[dict]:
    """{id, task, ref, hyp} of every batch of `loader` (a with_targets=False loader). `synced`:
    ranks keep stepping until all are done (FSDP: every rank must join every forward)."""
    stops = fmt.stop_ids(cfg.decode.stop_tokens, model.causal_lm.generation_config.eos_token_id)
    rows = []
    was_training = model.training
    model.eval()
    fork = [device] if device.type == "cuda" else []
    for batch in loader:
        with autocast(cfg, device), torch.random.fork_rng(devices=fork):
            torch.manual_seed(cfg.decode.seed)
            out = model.generate(to_device(batch, device, DECODE_KEYS), cfg.decode, stops, fmt.pad_id, synced)
        dup = batch.get("duplicate") or [False] * len(out)
        for cut_id, task, ref, ids, copy in zip(
            batch["ids"], batch["tasks"], batch["targets"], out, dup, strict=True
        ):
            if copy:  # lhotse's padding copy of a cut another rank decodes
                continue
            rows.append({"id": cut_id, "task": task, "ref": ref, "hyp": fmt.decode(ids)})
    model.train(was_training)
    return rows


def generation_eval(
    model: Any, loader, fmt: PromptFormat, cfg: Config, d: Dist, step: int, output: Path
) -> dict[str, Any]:
    """Decode the dev subset on every rank, gather, score on all ranks (same numbers), and write the
    hypotheses to OUTPUT/eval/step-NNNNNNN.jsonl."""
    rows = decode_rows(
        model, loader, fmt, cfg, d.device, synced=d.world > 1 and cfg.train.distributed == "fsdp"
    )
    if d.world > 1:
        gathered: list[list[dict]] = [[] for _ in range(d.world)]
        dist.all_gather_object(gathered, rows)
        rows = [r for part in gathered for r in part]
    rows = sorted({r["id"]: r for r in rows}.values(), key=lambda r: r["id"])  # ranks may share a cut
    if d.main:
        out = Path(output) / "eval"
        out.mkdir(parents=True, exist_ok=True)
        with open(out / f"step-{step:07d}.jsonl", "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    metrics = task_metrics(rows)
    return {"dev_gen_cuts": len(rows), "dev_gen": metrics}


def summary_lines(metrics: dict[str, dict[str, Any]]) -> list[str]:
    """One readable line per task key, the label accuracy beside its majority-class baseline."""
    lines = []
    for key, m in metrics.items():
        parts = [f"n={m['n']}"]
        for name in ("wer", "cer", "timestamp_mae_s", "answer_f1"):
            if m.get(name) is not None:
                parts.append(f"{name}={m[name]:.3f}")
        if "label_accuracy" in m:
            base = m.get("majority_baseline")
            extra = (
                f" (majority baseline {base:.3f}: always {m['majority_labels']})" if base is not None else ""
            )
            parts.append(f"label_accuracy={m['label_accuracy']:.3f}{extra}")
        lines.append(f"  {key}: " + " ".join(parts))
    return lines
