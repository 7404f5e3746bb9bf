"""Training statistics summed over micro-batches and ranks with one all_reduce per logged step.

Per-sample losses stay on the compute device (no host sync per micro-batch, which would stall the
GPU's queue); batch metadata (durations, token counts) are host numbers. Both meet in one tensor
on the device at `reduce`, which the process group reduces with the device's backend.
"""

from __future__ import annotations

from typing import Any

import torch

from training.distributed import all_sum

SCALARS = (
    "loss_sum",
    "target_tokens",
    "audio_s",
    "frames",
    "padded_frames",
    "tokens",
    "padded_tokens",
    "cuts",
)
HOST = SCALARS[2:]  # known from the batch without touching the device


class Stats:
    def __init__(self, task_keys: list[str], device: torch.device | str = "cpu"):
        self.keys = list(task_keys)
        self.index = {k: i for i, k in enumerate(self.keys)}
        self.device = torch.device(device)
        self.host = [0.0] * len(HOST)
        # [loss_sum, target_tokens, then (loss_sum, tokens) per task key]
        self.dev = torch.zeros(2 + 2 * len(self.keys), dtype=torch.float64, device=self.device)

    def add(self, batch: dict[str, Any], out: dict[str, torch.Tensor]) -> None:
        s = out["sample_loss_sum"].detach().double()
        n = out["sample_tokens"].detach().double()
        dup = batch.get("duplicate")
        if dup is not None and any(dup):  # lhotse's padding copies (multi-rank dev passes): not scored
            real = torch.tensor([not x for x in dup], dtype=s.dtype, device=s.device)
            s, n = s * real, n * real
        cuts = len(batch["ids"]) - (sum(dup) if dup is not None else 0)
        values = (batch["audio_seconds"], batch["audio_frames"], batch["padded_frames"], batch["tokens"],
                  batch["padded_tokens"], cuts)  # fmt: skip
        for i, x in enumerate(values):
            self.host[i] += float(x)
        self.dev[0] += s.sum()
        self.dev[1] += n.sum()
        rows = [(j, self.index[t]) for j, t in enumerate(batch["tasks"]) if t in self.index]
        if rows:
            sample, task = (torch.tensor(x, device=s.device) for x in zip(*rows, strict=True))
            self.dev.index_add_(0, 2 + 2 * task, s[sample])
            self.dev.index_add_(0, 3 + 2 * task, n[sample])

    def reduce(self) -> dict[str, Any]:
        """Sums over all ranks (a collective: every rank calls it)."""
        host = torch.tensor(self.host, dtype=torch.float64).to(self.device)
        v = all_sum(torch.cat([self.dev[:2], host, self.dev[2:]])).tolist()
        d = dict(zip(SCALARS, v[: len(SCALARS)], strict=True))
        base = len(SCALARS)
        by_task = {
            k: v[base + 2 * j] / v[base + 2 * j + 1]
            for j, k in enumerate(self.keys)
            if v[base + 2 * j + 1] > 0
        }
        return {**d, "loss": d["loss_sum"] / max(1.0, d["target_tokens"]), "loss_by_task": by_task}
