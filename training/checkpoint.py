"""Checkpoints that resume exactly, and the LoRA-merged export for inference.

A checkpoint directory `checkpoints/step-NNNNNNN/` holds:
  model.pt       trainable weights only (a 7B LLM's frozen weights come back from its own path)
  optimizer.pt   optimizer state (full, keyed by parameter name: independent of DDP/FSDP layout)
  trainer.pt     step, LR scheduler, the config
  rank-R.pt      per rank: RNG states (python, numpy, torch, cuda) and the data position
  DONE           written last: a directory without it is an interrupted save and is ignored

Every file holds tensors and plain data only (dicts, lists, tuples, numbers, strings): the data
position as a dict, numpy's RNG state as a list. So every file loads with
`torch.load(weights_only=True)`, which builds no other Python object: a checkpoint from elsewhere
whose pickle names code (`__reduce__` to `os.system`, ...) is refused (UnsafeCheckpoint, one line
naming the file) instead of run.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from osum_data.errors import UsageError
from training.safe_load import safe_load
from training.stream import Position, StreamState

SAVE = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
LOAD = StateDictOptions(full_state_dict=True, strict=False)


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dirs(output: Path) -> list[Path]:
    root = Path(output) / "checkpoints"
    return sorted(p for p in root.glob("step-*") if (p / "DONE").exists()) if root.is_dir() else []


def latest_checkpoint(output: Path) -> Path | None:
    dirs = checkpoint_dirs(output)
    return dirs[-1] if dirs else None


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint (or export) directory holding model.pt, or a run directory (its latest one)."""
    path = Path(path)
    if (path / "model.pt").exists():
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise UsageError(f"{path}: no model.pt and no finished checkpoint under {path}/checkpoints")
    return latest


def save_checkpoint(
    output: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    position: Position,
    config: dict[str, Any],
    keep: int = 2,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Collective under torchrun (every rank calls it); rank 0 writes the shared files."""
    path = Path(output) / "checkpoints" / f"step-{step:07d}"
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    # ignore_frozen_params misses tied weights (lm_head = embeddings), so filter by name as well.
    model_sd = {k: v for k, v in get_model_state_dict(model, options=SAVE).items() if k in trainable}
    optim_sd = get_optimizer_state_dict(model, optimizer, options=SAVE)
    if rank() == 0:
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        torch.save(model_sd, path / "model.pt")
        torch.save(optim_sd, path / "optimizer.pt")
        trainer = {"step": step, "scheduler": scheduler.state_dict(), "config": config, "extra": extra or {}}
        torch.save(trainer, path / "trainer.pt")
    barrier()
    torch.save({"rng": rng_state(), "position": dataclasses.asdict(position)}, path / f"rank-{rank()}.pt")
    barrier()
    if rank() == 0:
        (path / "DONE").touch()
        for old in checkpoint_dirs(output)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return path


def load_trainable(model: torch.nn.Module, path: Path) -> None:
    """Trainable weights of a checkpoint (or export) directory into `model` (missing keys keep their
    current values: e.g. LoRA weights absent from an adapter-only stage-1 checkpoint)."""
    sd = safe_load(Path(path) / "model.pt")
    own = dict(model.named_parameters())
    unknown = [k for k in sd if k not in own]
    if unknown:
        raise UsageError(f"{path}/model.pt has weights the model lacks (config mismatch?): {unknown[:5]}")
    shapes = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in sd.items() if v.shape != own[k].shape
    ]
    if shapes:
        raise UsageError(
            f"{path}/model.pt: weights of another shape than the model's (config mismatch?): {shapes[:5]}"
        )
    set_model_state_dict(model, sd, options=LOAD)


def load_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, fast: bool = False
) -> tuple[int, Position, dict[str, Any]]:
    """Restore everything saved by save_checkpoint; returns (step, data position of this rank, the
    loop's extra state).
    `fast` (train.resume_data): any world size; every rank starts from rank 0's stream position
    (the stream is the same on every rank) with fresh per-rank RNG seeds."""
    path = Path(path)
    load_trainable(model, path)
    optim_sd = safe_load(path / "optimizer.pt")
    set_optimizer_state_dict(model, optimizer, optim_sd, options=LOAD)
    trainer = safe_load(path / "trainer.pt")
    scheduler.load_state_dict(trainer["scheduler"])
    saved_world = len(list(path.glob("rank-*.pt")))
    world = dist.get_world_size() if dist.is_initialized() else 1
    step, extra = int(trainer["step"]), trainer.get("extra", {})
    if fast:
        state = safe_load(path / "rank-0.pt")
        if saved_world == world:
            state = safe_load(path / f"rank-{rank()}.pt")
            set_rng_state(state["rng"])
        else:
            seed = int(trainer["config"].get("seed", 0))
            torch.manual_seed(seed + 1000003 * step + rank())
        return step, position_from_dict(state["position"]), extra
    if saved_world != world:
        raise UsageError(
            f"{path} was saved by {saved_world} ranks, this run has {world}: an exact resume needs the same "
            f"world size; --set train.resume_data=fast resumes with any"
        )
    state = safe_load(path / f"rank-{rank()}.pt")
    set_rng_state(state["rng"])
    return step, position_from_dict(state["position"]), extra


def position_from_dict(d: dict[str, Any]) -> Position:
    """The Position saved as a dict by save_checkpoint."""

    def state(s: dict[str, Any] | None) -> StreamState | None:
        if s is None:
            return None
        return StreamState(**{**s, "sources": tuple(tuple(x) for x in s.get("sources", ()))})

    peers = d.get("peers")
    peers = None if peers is None else tuple(map(state, peers))
    return Position(**{**d, "stream": state(d.get("stream")), "peers": peers})


def export_merged(model: torch.nn.Module, tokenizer: Any, config: dict[str, Any], out: Path) -> Path:
    """Write an inference bundle: the LLM with LoRA merged into its weights (a plain HF directory),
    the Whisper encoder as a Whisper-style directory, the adapter as `model.pt`, and a config.yaml
    pointing at them (`osum-decode --config OUT/config.yaml --checkpoint OUT`)."""
    import copy

    import yaml
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    llm = model.llm.merge_and_unload() if hasattr(model.llm, "merge_and_unload") else model.llm
    llm.save_pretrained(out / "llm")
    tokenizer.save_pretrained(out / "llm")
    enc_dir = out / "encoder"
    enc_dir.mkdir(exist_ok=True)
    model.encoder.config.save_pretrained(enc_dir)
    enc_sd = {
        f"model.encoder.{k}": v.detach().contiguous().cpu() for k, v in model.encoder.state_dict().items()
    }
    save_file(enc_sd, enc_dir / "model.safetensors")
    torch.save(
        {f"adapter.{k}": v.detach().cpu() for k, v in model.adapter.state_dict().items()}, out / "model.pt"
    )
    cfg = copy.deepcopy(config)
    cfg["model"]["encoder"] = {**cfg["model"]["encoder"], "path": str(enc_dir.resolve()), "config": None}
    cfg["model"]["llm"] = {**cfg["model"]["llm"], "path": str((out / "llm").resolve()), "config": None}
    cfg["model"]["llm"]["tokenizer"] = None
    cfg["model"]["lora"] = None
    cfg["model"]["train"] = ["adapter"]
    cfg["model"]["init_from"] = None
    tmp = out / f".config.yaml.tmp{os.getpid()}"
    tmp.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), encoding="utf-8")
    os.replace(tmp, out / "config.yaml")
    return out
