"""Where a run's records go: DIR/train_log.jsonl (the record of truth), stdout, TensorBoard
(DIR/tensorboard, what OSUM's WeNet trainer writes) and Weights & Biases when the user set
`train.wandb_project` (never required).

Nested records ({"loss_by_task": {"<TRANSCRIBE>": 1.2}}) become slash-separated scalar tags
(loss_by_task/<TRANSCRIBE>); strings and lists stay in the JSON log only.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path
from typing import Any


def truncate_log(path: Path, step: int) -> None:
    """Keep the JSON-lines records of steps <= `step`."""
    kept = [
        line for line in path.read_text(encoding="utf-8").splitlines() if json.loads(line)["step"] <= step
    ]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def scalars(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in record.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(scalars(v, name + "/"))
        elif isinstance(v, bool):
            out[name] = float(v)
        elif isinstance(v, int | float) and math.isfinite(v):
            out[name] = float(v)
    return out


class RunLog:
    """Records of the main rank. `step` > 0 (a resumed run): records after it are dropped from the
    JSON log (they are about to be redone) and TensorBoard purges its events after it; 0 (a fresh
    start): whatever an earlier run left in DIR without a checkpoint is replaced."""

    def __init__(
        self,
        output: Path,
        active: bool,
        step: int,
        tensorboard: bool = True,
        wandb_project: str | None = None,
        config: dict[str, Any] | None = None,
    ):
        self.active = active
        self.path = Path(output) / "train_log.jsonl"
        self.tb = self.wandb = None
        if not active:
            return
        if self.path.exists():
            truncate_log(self.path, step)
        self.f = open(self.path, "a", encoding="utf-8")
        where = [str(self.path)]
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # the JSON log has everything; say how to get the rest
                print("TensorBoard logging off: pip install tensorboard (or set train.tensorboard=false)")
                SummaryWriter = None
            if SummaryWriter is not None:
                tb_dir = Path(output) / "tensorboard"
                if step == 0:
                    shutil.rmtree(tb_dir, ignore_errors=True)
                self.tb = SummaryWriter(str(tb_dir), purge_step=step + 1 if step else None)
                where.append(f"TensorBoard: tensorboard --logdir {tb_dir}")
        if wandb_project:
            try:
                import wandb
            except ImportError as e:
                raise ImportError(
                    f"train.wandb_project is {wandb_project!r} but wandb is not installed: pip install wandb "
                    f"(and `wandb login`), or unset train.wandb_project"
                ) from e
            # One W&B run per output directory: a resumed run continues it.
            run_id = hashlib.sha1(str(Path(output).resolve()).encode()).hexdigest()[:16]
            self.wandb = wandb.init(
                project=wandb_project, dir=str(output), config=config, id=run_id, resume="allow"
            )
            where.append(f"W&B project {wandb_project}")
        print("logs: " + " | ".join(where), flush=True)

    def __call__(self, record: dict[str, Any]) -> None:
        if not self.active:
            return
        self.f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.f.flush()
        step = int(record["step"])
        flat = scalars({k: v for k, v in record.items() if k != "step"})
        if self.tb is not None:
            for k, v in flat.items():
                self.tb.add_scalar(k, v, step)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(flat, step=step)
        shown = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in record.items()
            if not isinstance(v, dict)
        )
        print(shown, flush=True)

    def close(self) -> None:
        if not self.active:
            return
        self.f.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
