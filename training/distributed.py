"""torchrun plumbing: process group, device, DDP or FSDP wrapping, and summing stats over ranks.

Launched plainly, everything here is a no-op (world size 1). Under torchrun the process group
serves CPU tensors (gloo) and, on GPUs, CUDA tensors (NCCL, or `train.dist_backend`, e.g. hccl):
a device-only group fails on the first collective that touches a CPU tensor ("No backend type
associated with device type cpu"), so both are always registered.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def process_group_backend(device_type: str, device_backend: str | None = None) -> str:
    """The `init_process_group` backend string: gloo for CPU tensors always, plus the accelerator's
    own backend for its tensors (default nccl)."""
    if device_type == "cpu":
        return "gloo"
    return f"cpu:gloo,{device_type}:{device_backend or 'nccl'}"


def setup(device_backend: str | None = None) -> Dist:
    """Join the torchrun process group if launched by torchrun."""
    cuda = torch.cuda.is_available()
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return Dist(device=torch.device("cuda" if cuda else "cpu"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(process_group_backend("cuda" if cuda else "cpu", device_backend))
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    return Dist(dist.get_rank(), dist.get_world_size(), local, device)


def teardown() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def wrap(model: nn.Module, d: Dist, mode: str) -> nn.Module:
    """DDP (gradients all-reduced; trainable parts replicated) or FSDP2 (every encoder and LLM
    layer sharded across ranks: for LLMs whose frozen weights do not fit one GPU)."""
    if d.world == 1:
        return model
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[d.local_rank] if d.device.type == "cuda" else None)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(d.device.type, (d.world,))
    for layer in list(model.encoder.layers) + list(model.causal_lm.get_decoder().layers):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def no_sync(wrapped: nn.Module, last_micro_batch: bool):
    """Skip the gradient all-reduce on all but the last micro-batch of an accumulation step."""
    if last_micro_batch:
        return contextlib.nullcontext()
    if hasattr(wrapped, "no_sync"):
        return wrapped.no_sync()
    if hasattr(wrapped, "set_requires_gradient_sync"):  # FSDP2

        @contextlib.contextmanager
        def fsdp_no_sync():
            wrapped.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                wrapped.set_requires_gradient_sync(True)

        return fsdp_no_sync()
    return contextlib.nullcontext()


def all_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t)
    return t
