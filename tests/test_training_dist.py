"""Process-group plumbing on CPU: the collectives the trainer runs work on the group it builds.

Bug 1 of issue 10: on GPUs the group was NCCL-only and the first logged step all-reduced a CPU
tensor ("No backend type associated with device type cpu"). NCCL cannot run here, so gloo stands
in for it: the group is built by the trainer's own `process_group_backend("cuda", "gloo")`, i.e.
exactly as on a GPU machine with the device backend swapped. A second group built the old way
("cuda:gloo", device-only) proves the stand-in reproduces the crash.
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from training.distributed import process_group_backend
from training.stats import Stats

KEYS = ["<TRANSCRIBE>", "<TRANSCRIBE> <GENDER>"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_step(rank: int) -> tuple[dict, dict]:
    batch = {"audio_seconds": 2.0, "audio_frames": 200, "padded_frames": 300, "tokens": 50,
             "padded_tokens": 60, "ids": ["a", "b"], "tasks": KEYS}  # fmt: skip
    out = {
        "sample_loss_sum": torch.tensor([3.0, 5.0]) * (rank + 1),
        "sample_tokens": torch.tensor([2, 4]),
    }
    return batch, out


def _worker(rank: int, port: int, results) -> None:
    dist.init_process_group(
        process_group_backend("cuda", "gloo"), init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    try:
        stats = Stats(KEYS)
        stats.add(*fake_step(rank))
        r = stats.reduce()  # the trainer's logged-step reduction
        device_only = dist.new_group([0, 1], backend="cuda:gloo")
        try:
            dist.all_reduce(torch.zeros(1, dtype=torch.float64), group=device_only)
            old = "no error"
        except RuntimeError as e:
            old = str(e)
        results[rank] = (r, old)
    finally:
        dist.destroy_process_group()


def test_logged_step_reduction_works_on_the_group_built_for_a_gpu():
    assert process_group_backend("cuda") == "cpu:gloo,cuda:nccl"
    assert process_group_backend("cuda", "hccl") == "cpu:gloo,cuda:hccl"
    assert process_group_backend("cpu") == "gloo"
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(free_port(), results), nprocs=2, join=True)
    for rank in (0, 1):
        r, old = results[rank]
        # sums over both ranks: cuts 2+2, loss (3+5)*1 + (3+5)*2, tokens 6+6
        assert r["cuts"] == 4 and r["loss_sum"] == 24 and r["target_tokens"] == 12
        assert r["loss_by_task"] == pytest.approx({KEYS[0]: 9 / 4, KEYS[1]: 15 / 8})
        assert "No backend type associated with device type cpu" in old
