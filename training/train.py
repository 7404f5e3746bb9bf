"""`osum-train`: the training loop (nanoGPT-style: one function, read top to bottom).

    osum-train --config training/configs/tiny.yaml --train CUTS [--train CUTS2 --weights 3 1]
               [--dev CUTS] --output DIR [--max-steps N] [--resume] [--stop-after-steps N]
               [--set optim.lr=1e-4]
    torchrun --nproc_per_node 8 -m training.train ...        (DDP; train.distributed=fsdp for FSDP)

--train/--dev take a CutSet manifest, a pipeline output directory, a Lhotse Shar directory or a
Shar fields file, locally or at any URL lhotse opens (https://, s3://, gs://, ...).

Writes DIR/train_log.jsonl (one record per logged step: loss overall and per task, lr, grad norm,
tokens/s, audio-seconds/s, padding ratios, time waiting for data, skipped steps, peak memory; dev
loss and generation metrics), the same to TensorBoard (DIR/tensorboard) and W&B when configured,
DIR/eval/step-N.jsonl (dev hypotheses) and DIR/checkpoints/.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml

from osum_data.errors import UsageError
from osum_data.sources import add_cli_flags, policy_env
from training.checkpoint import latest_checkpoint, load_checkpoint, load_trainable, save_checkpoint
from training.cli_errors import run_command
from training.config import Config, OptimConfig, load_config
from training.data import CutFilter, make_loader, open_cuts, training_stream
from training.distributed import Dist, no_sync, setup, teardown, wrap
from training.evaluate import autocast, dev_loss, generation_eval, summary_lines, task_keys, to_device
from training.logs import RunLog, truncate_log
from training.model import build_model, count_parameters, speech_boundary_tokens
from training.sequence import PromptFormat, prompt_format
from training.stats import Stats
from training.stream import Position, describe

# A skipped update (StepGuard) still advances the schedule: step counts are data, not updates.
warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler.step\(\)` before `optimizer.step\(\)`")

__all__ = ["autocast", "build_loaders", "lr_lambda", "main", "to_device", "train"]


def lr_lambda(o: OptimConfig):
    """Linear warmup, then cosine or linear decay to min_lr_ratio at max_steps, constant, or
    inverse square root (WeNet's WarmupLR: lr * min(s / w, sqrt(w / s)) at step s = step + 1)."""

    def f(step: int) -> float:
        if step < o.warmup_steps:
            return (step + 1) / o.warmup_steps
        if o.decay == "constant":
            return 1.0
        if o.decay == "inverse_sqrt":
            return math.sqrt(o.warmup_steps / (step + 1))
        progress = min(1.0, (step - o.warmup_steps) / max(1, o.max_steps - o.warmup_steps))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if o.decay == "cosine" else 1 - progress
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * shape

    return f


def build_loaders(
    cfg: Config,
    fmt: PromptFormat,
    train_specs: list[str],
    weights: list[float] | None,
    dev_spec: str | None,
    d: Dist,
    start: Position,
):
    """The training loader (from `start`), the dev loss loader and the dev generation loader (the
    first train.eval_decode_cuts dev cuts); None without `dev_spec`. Batches for a GPU are pinned,
    so `to_device`'s non_blocking copies overlap with compute."""
    common = dict(pin_memory=d.device.type == "cuda", boundary_tokens=speech_boundary_tokens(cfg))
    c = cfg.data
    keep = CutFilter(c.max_cut_duration, c.max_target_tokens, fmt)
    stream = training_stream(train_specs, weights, c.mux_seed, keep, c.mix_temperature, d.rank, d.world)
    if d.main and len(train_specs) > 1:
        print("training mix:", json.dumps(describe(stream.sources, stream.p)), flush=True)
    fast = cfg.train.resume_data == "fast"
    loader = make_loader(
        stream, fmt, c, cfg.seed, d.world, d.rank, train=True, start=start, fast_resume=fast,
        cut_filter=keep, **common,
    )  # fmt: skip
    dev_loader = gen_loader = None
    if dev_spec:
        dev = open_cuts(dev_spec)
        dev_loader = make_loader(dev, fmt, c, cfg.seed, d.world, d.rank, train=False, epochs=1, **common)
        if cfg.train.eval_decode_cuts:
            dc = c.model_copy(update={"max_duration": cfg.decode.max_duration})
            subset = dev.subset(first=cfg.train.eval_decode_cuts)
            gen_loader = make_loader(
                subset,
                fmt,
                dc,
                cfg.seed,
                d.world,
                d.rank,
                train=False,
                with_targets=False,
                epochs=1,
                **common,
            )
    return loader, dev_loader, gen_loader


def with_peers(position: Position, d: Dist) -> Position:
    """`position` with every rank's stream state (a collective under torchrun): a fast resume on
    another number of ranks starts past what any of them had read."""
    if d.world == 1 or position.stream is None:
        return position
    import dataclasses

    import torch.distributed as dist

    states: list[Any] = [None] * d.world
    dist.all_gather_object(states, position.stream)
    return dataclasses.replace(position, peers=tuple(states))


def peak_memory(device: torch.device) -> dict[str, float]:
    """Peak accelerator memory allocated by tensors (GiB) and peak resident memory of this process."""
    out = {"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    if device.type == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


class StepGuard:
    """Decides whether an update is applied: not when the gradient norm is NaN/inf
    (`optim.skip_nonfinite`), nor when it exceeds `optim.spike_factor` times its running mean
    (after `optim.spike_warmup` steps). Skipped updates are counted and logged. The norm is that
    of the synchronised gradients, so every rank takes the same decision."""

    def __init__(self, o: OptimConfig, state: dict[str, Any] | None = None):
        self.o = o
        state = state or {}
        self.skipped = int(state.get("skipped", 0))
        self.mean = state.get("mean")  # running mean of applied steps' norms
        self.seen = int(state.get("seen", 0))

    def allow(self, norm: float) -> bool:
        o = self.o
        if not math.isfinite(norm):
            if o.skip_nonfinite:
                self.skipped += 1
                return False
            return True
        if (
            o.spike_factor
            and self.mean is not None
            and self.seen >= o.spike_warmup
            and norm > o.spike_factor * self.mean
        ):
            self.skipped += 1
            return False
        self.seen += 1
        self.mean = norm if self.mean is None else 0.98 * self.mean + 0.02 * norm
        return True

    def state(self) -> dict[str, Any]:
        return {"skipped": self.skipped, "mean": self.mean, "seen": self.seen}


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
        raise UsageError(
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
        raise UsageError("nothing to train: model.train names no part with parameters")
    o = cfg.optim
    optimizer = torch.optim.AdamW(
        params, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(o))

    step, start, extra = 0, Position(0, 0, 0), {}
    if ckpt is not None:
        step, start, extra = load_checkpoint(
            ckpt, model, optimizer, scheduler, cfg.train.resume_data == "fast"
        )
    else:
        torch.manual_seed(cfg.seed + d.rank)  # dropout differs per rank, same on every run
    ids_path = output / f"cut_ids.rank{d.rank}.jsonl"
    if ids_path.exists():  # records after the checkpoint (or of a run that died before one) go
        truncate_log(ids_path, step)
    log = RunLog(output, d.main, step, cfg.train.tensorboard, cfg.train.wandb_project, cfg.to_dict())
    fmt = prompt_format(cfg, tokenizer)
    loader, dev_loader, gen_loader = build_loaders(cfg, fmt, train_specs, weights, dev_spec, d, start)

    ids_log = open(ids_path, "a") if cfg.train.log_cut_ids else None
    if d.main:
        how = "fresh start" if ckpt is None else f"resumed ({cfg.train.resume_data}) from {ckpt}"
        print(f"params {count_parameters(model)} | world {d.world} on {d.device} | {how}", flush=True)
        if ckpt is not None and cfg.train.resume_data == "fast":
            n = cfg.data.buffer_size
            print(f"fast resume: the input restarts at its saved position; up to data.buffer_size={n} "
                  "cuts buffered at the checkpoint are not seen this epoch", flush=True)  # fmt: skip

    guard = StepGuard(o, extra.get("guard"))
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
    skipped_at_log = guard.skipped
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
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, o.clip if o.clip > 0 else math.inf))
        lr = scheduler.get_last_lr()[0]
        if guard.allow(grad_norm):
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
                "grad_norm": grad_norm,
                "tokens_per_s": r["tokens"] / elapsed,
                "audio_s_per_s": r["audio_s"] / elapsed,
                "pad_ratio_audio": 1 - r["frames"] / max(1.0, r["padded_frames"]),
                "pad_ratio_tokens": 1 - r["tokens"] / max(1.0, r["padded_tokens"]),
                "cuts": int(r["cuts"]),
                "data_wait_s": data_time,
                "elapsed_s": elapsed,
                "skipped_steps": guard.skipped,  # updates not applied (non-finite or spiking gradients)
                "skipped_cuts": dict(loader.cut_filter.counts),  # read but too long (audio/target)
                **peak_memory(d.device),
            }
            if guard.skipped > skipped_at_log and d.main:
                n = guard.skipped - skipped_at_log
                print(f"step {step}: {n} update(s) skipped (last grad norm {grad_norm:.4g})", flush=True)
            skipped_at_log = guard.skipped
            log(record)
            stats, t_log, data_time = Stats(task_keys(), d.device), time.perf_counter(), 0.0
        if dev_loader is not None and cfg.train.eval_every and step % cfg.train.eval_every == 0:
            ev = {"step": step, **dev_loss(wrapped, dev_loader, cfg, d)}
            if gen_loader is not None:
                ev.update(generation_eval(model, gen_loader, fmt, cfg, d, step, output))
                if d.main:
                    print(
                        "\n".join([f"step {step} dev generation:"] + summary_lines(ev["dev_gen"])), flush=True
                    )
            log(ev)
        if step % cfg.train.save_every == 0 or step == last_step:
            position = with_peers(position, d)
            save_checkpoint(output, step, model, optimizer, scheduler, position, cfg.to_dict(),
                            cfg.train.keep_checkpoints, extra={"guard": guard.state()})  # fmt: skip
    if ids_log:
        ids_log.close()
    log.close()
    teardown()
    return {"step": step, "last": record}


def main(argv: list[str] | None = None) -> int:
    """`osum-train`: one line and exit 2 (config), 1 (runtime) or 130 (Ctrl-C, SIGTERM)."""
    return run_command("osum-train", _main, argv)


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="osum-train", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--config", required=True, help="trainer YAML (training/configs/*.yaml)")
    ap.add_argument(
        "--train",
        action="append",
        required=True,
        help="manifest, pipeline output dir, Shar dir/fields file, or URL",
    )
    ap.add_argument("--weights", type=float, nargs="+", help="mixing weights, one per --train")
    ap.add_argument(
        "--dev", help="dev manifest: loss per task (and generation metrics) every train.eval_every steps"
    )
    ap.add_argument("--output", required=True, type=Path)
    ap.add_argument("--max-steps", type=int, help="overrides optim.max_steps (the LR schedule's length)")
    ap.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --output")
    ap.add_argument(
        "--stop-after-steps", type=int, help="train this many steps, checkpoint and exit (job time limits)"
    )
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    add_cli_flags(ap)
    args = ap.parse_args(argv)
    if args.weights is not None and len(args.weights) != len(args.train):
        raise UsageError(
            f"--weights gives {len(args.weights)} weight(s) for {len(args.train)} --train input(s): "
            "give one weight per --train"
        )
    if args.weights is not None and (
        any(not math.isfinite(w) or w < 0 for w in args.weights) or not sum(args.weights) > 0
    ):
        raise UsageError(f"--weights must be finite, >= 0 and not all 0, got {args.weights}")
    overrides = list(args.set) + ([f"optim.max_steps={args.max_steps}"] if args.max_steps else [])
    cfg = load_config(args.config, overrides)
    with policy_env(args):
        train(cfg, args.train, args.output, args.weights, args.dev, args.resume, args.stop_after_steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
