"""`osum-train`: the training loop (nanoGPT-style: one function, read top to bottom).

    osum-train --config training/configs/tiny.yaml --train CUTS [--train CUTS2 --weights 3 1]
               [--dev CUTS] --output DIR [--max-steps N] [--resume] [--stop-after-steps N]
               [--set optim.lr=1e-4]
    torchrun --nproc_per_node 8 -m training.train ...        (DDP; train.distributed=fsdp for FSDP)

Writes DIR/train_log.jsonl (one record per logged step: loss overall and per task, lr, grad norm,
tokens/s, audio-seconds/s, padding ratios, time waiting for data) and DIR/checkpoints/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from training.checkpoint import latest_checkpoint, load_checkpoint, load_trainable, save_checkpoint
from training.config import Config, OptimConfig, load_config
from training.data import Position, make_loader, mix, open_cuts
from training.distributed import Dist, no_sync, setup, teardown, wrap
from training.model import build_model, count_parameters
from training.sequence import PromptFormat
from training.stats import Stats

MODEL_KEYS = ("mel", "mel_lens", "input_ids", "speech_mask", "attention_mask", "labels")


def lr_lambda(o: OptimConfig):
    """Linear warmup, then cosine or linear decay to min_lr_ratio at max_steps (or constant)."""

    def f(step: int) -> float:
        if step < o.warmup_steps:
            return (step + 1) / o.warmup_steps
        if o.decay == "constant":
            return 1.0
        progress = min(1.0, (step - o.warmup_steps) / max(1, o.max_steps - o.warmup_steps))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if o.decay == "cosine" else 1 - progress
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * shape

    return f


def autocast(cfg: Config, device: torch.device):
    """bf16 autocast on GPU (no loss scaling needed, unlike fp16's NaNs); fp32 on CPU by default."""
    p = cfg.train.precision
    if p == "bf16" or (p == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: batch[k].to(device, non_blocking=True) for k in MODEL_KEYS}


def task_keys() -> list[str]:
    from osum_data.tasks import registry

    return list(registry().all_keys)


@torch.no_grad()
def evaluate(wrapped: torch.nn.Module, loader, cfg: Config, d: Dist) -> dict[str, Any]:
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


def truncate_log(path: Path, step: int) -> None:
    """Keep the JSON-lines records of steps <= `step`."""
    kept = [
        line for line in path.read_text(encoding="utf-8").splitlines() if json.loads(line)["step"] <= step
    ]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def build_loaders(
    cfg: Config,
    fmt: PromptFormat,
    train_specs: list[str],
    weights: list[float] | None,
    dev_spec: str | None,
    d: Dist,
    start: Position,
):
    """The training loader (from `start`) and the dev loader (None without `dev_spec`). Batches
    for a GPU are pinned, so `to_device`'s non_blocking copies overlap with compute."""
    pin = d.device.type == "cuda"
    cuts = mix(train_specs, weights, cfg.data.mux_seed, cfg.data.max_cut_duration)
    loader = make_loader(
        cuts, fmt, cfg.data, cfg.seed, d.world, d.rank, train=True, start=start, pin_memory=pin
    )
    dev_loader = None
    if dev_spec:
        dev_loader = make_loader(
            open_cuts(dev_spec),
            fmt,
            cfg.data,
            cfg.seed,
            d.world,
            d.rank,
            train=False,
            epochs=1,
            pin_memory=pin,
        )
    return loader, dev_loader


class Logger:
    def __init__(self, path: Path, active: bool):
        self.active = active
        self.f = open(path, "a", encoding="utf-8") if active else None

    def __call__(self, record: dict[str, Any]) -> None:
        if not self.active:
            return
        self.f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.f.flush()
        parts = [
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in record.items()
            if k != "loss_by_task"
        ]
        print(" ".join(parts), flush=True)

    def close(self) -> None:
        if self.f:
            self.f.close()


def train(
    cfg: Config,
    train_specs: list[str],
    output: Path,
    weights: list[float] | None = None,
    dev_spec: str | None = None,
    resume: bool = False,
    stop_after_steps: int | None = None,
) -> dict[str, Any]:
    d = setup(cfg.train.dist_backend)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    ckpt = latest_checkpoint(output)
    if ckpt is not None and not resume:
        raise FileExistsError(
            f"{output} already has checkpoints ({ckpt.name}): pass --resume or a new --output"
        )
    if d.main:
        (output / "config.yaml").write_text(
            yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)
        )

    model, tokenizer = build_model(cfg)
    if cfg.model.init_from:
        load_trainable(model, Path(cfg.model.init_from))
    model.to(d.device)
    wrapped = wrap(model, d, cfg.train.distributed)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: model.train names no part with parameters")
    o = cfg.optim
    optimizer = torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(o))

    step, start = 0, Position(0, 0, 0)
    if ckpt is not None:
        step, start = load_checkpoint(ckpt, model, optimizer, scheduler)
    else:
        torch.manual_seed(cfg.seed + d.rank)  # dropout differs per rank, same on every run
    for log_file in (output / "train_log.jsonl", output / f"cut_ids.rank{d.rank}.jsonl"):
        if log_file.exists() and (d.main or log_file.name.startswith("cut_ids")):
            # Resumed: records written after the checkpoint (a run killed later) are about to be
            # redone. Fresh: the records of a run that died before its first checkpoint go.
            truncate_log(log_file, step)
    fmt = PromptFormat(tokenizer, cfg.data.chat_template, cfg.data.system_prompt)
    loader, dev_loader = build_loaders(cfg, fmt, train_specs, weights, dev_spec, d, start)

    log = Logger(output / "train_log.jsonl", d.main)
    ids_log = open(output / f"cut_ids.rank{d.rank}.jsonl", "a") if cfg.train.log_cut_ids else None
    if d.main:
        print(f"params {count_parameters(model)} | world {d.world} on {d.device} | "
              f"{'resumed from ' + str(ckpt) if ckpt else 'fresh start'}", flush=True)  # fmt: skip

    last_step = o.max_steps if stop_after_steps is None else min(o.max_steps, step + stop_after_steps)
    batches = iter(loader)
    wrapped.train()
    stats, t_log, data_time, position, record = (
        Stats(task_keys(), d.device),
        time.perf_counter(),
        0.0,
        start,
        {},
    )
    while step < last_step:
        for micro in range(o.grad_accum):
            t0 = time.perf_counter()
            batch = next(batches)
            data_time += time.perf_counter() - t0
            position = batch["position"]
            if ids_log:
                rec = {"step": step + 1, "micro": micro, "epoch": position.epoch, "ids": batch["ids"]}
                ids_log.write(json.dumps(rec) + "\n")
            with no_sync(wrapped, micro == o.grad_accum - 1), autocast(cfg, d.device):
                out = wrapped(to_device(batch, d.device))
                (out["loss"] / o.grad_accum).backward()
            stats.add(batch, out)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, o.clip) if o.clip > 0 else torch.tensor(0.0)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1

        if step % cfg.train.log_every == 0 or step == last_step:
            r = stats.reduce()
            elapsed = time.perf_counter() - t_log
            record = {
                "step": step,
                "epoch": position.epoch,
                "loss": r["loss"],
                "loss_by_task": r["loss_by_task"],
                "lr": lr,
                "grad_norm": float(grad_norm),
                "tokens_per_s": r["tokens"] / elapsed,
                "audio_s_per_s": r["audio_s"] / elapsed,
                "pad_ratio_audio": 1 - r["frames"] / max(1.0, r["padded_frames"]),
                "pad_ratio_tokens": 1 - r["tokens"] / max(1.0, r["padded_tokens"]),
                "cuts": int(r["cuts"]),
                "data_wait_s": data_time,
                "elapsed_s": elapsed,
            }
            log(record)
            stats, t_log, data_time = Stats(task_keys(), d.device), time.perf_counter(), 0.0
        if dev_loader is not None and cfg.train.eval_every and step % cfg.train.eval_every == 0:
            log({"step": step, **evaluate(wrapped, dev_loader, cfg, d)})
        if step % cfg.train.save_every == 0 or step == last_step:
            save_checkpoint(output, step, model, optimizer, scheduler, position, cfg.to_dict(),
                            cfg.train.keep_checkpoints)  # fmt: skip
    if ids_log:
        ids_log.close()
    log.close()
    teardown()
    return {"step": step, "last": record}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="osum-train", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--config", required=True, help="trainer YAML (training/configs/*.yaml)")
    ap.add_argument(
        "--train", action="append", required=True, help="CutSet jsonl.gz, pipeline output dir or Shar dir"
    )
    ap.add_argument("--weights", type=float, nargs="+", help="mixing weights, one per --train")
    ap.add_argument("--dev", help="dev manifest: teacher-forced loss per task every train.eval_every steps")
    ap.add_argument("--output", required=True, type=Path)
    ap.add_argument("--max-steps", type=int, help="overrides optim.max_steps (the LR schedule's length)")
    ap.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --output")
    ap.add_argument(
        "--stop-after-steps", type=int, help="train this many steps, checkpoint and exit (job time limits)"
    )
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    args = ap.parse_args(argv)
    overrides = list(args.set) + ([f"optim.max_steps={args.max_steps}"] if args.max_steps else [])
    cfg = load_config(args.config, overrides)
    train(cfg, args.train, args.output, args.weights, args.dev, args.resume, args.stop_after_steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
