"""torchrun on CPU (gloo): two ranks train on disjoint data; FSDP computes what DDP computes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from osum_data.demo.task_cuts import write_demo_manifest
from tests.conftest import REPO

TINY = REPO / "training" / "configs" / "tiny.yaml"


def torchrun(manifest: Path, out: Path, *extra: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "training.train", "--config", str(TINY), "--train", str(manifest), "--output", str(out),
           "--max-steps", "4", "--set", "data.max_duration=8", "--set", "train.log_cut_ids=true",
           "--set", "train.log_every=1", *extra]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def ids_by_rank(out: Path) -> dict[int, list[dict]]:
    return {
        r: [json.loads(x) for x in (out / f"cut_ids.rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)
    }


def losses(out: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_torchrun_two_ranks_see_disjoint_data_and_fsdp_matches_ddp(tmp_path):
    manifest = write_demo_manifest(tmp_path / "cuts.jsonl.gz", 24, tasks=("asr", "sgc"), max_duration=3.6)
    torchrun(manifest, tmp_path / "ddp")
    seen = ids_by_rank(tmp_path / "ddp")
    assert [r["step"] for r in seen[0]] == [r["step"] for r in seen[1]] == [1, 2, 3, 4]
    for epoch in {r["epoch"] for r in seen[0]}:
        ids = {r: [i for rec in seen[r] if rec["epoch"] == epoch for i in rec["ids"]] for r in (0, 1)}
        assert ids[0] and ids[1] and not set(ids[0]) & set(ids[1])  # disjoint across ranks
        assert len(ids[0] + ids[1]) == len(set(ids[0] + ids[1]))  # nothing twice within an epoch
    log = losses(tmp_path / "ddp")
    assert len(log) == 4 and all(x == x for x in log)
    # Logged statistics are sums over both ranks.
    records = [json.loads(x) for x in (tmp_path / "ddp" / "train_log.jsonl").read_text().splitlines()]
    assert [r["cuts"] for r in records] == [
        len(a["ids"]) + len(b["ids"]) for a, b in zip(*seen.values(), strict=True)
    ]

    torchrun(manifest, tmp_path / "fsdp", "--set", "train.distributed=fsdp")
    assert ids_by_rank(tmp_path / "fsdp") == seen
    for a, b in zip(log, losses(tmp_path / "fsdp"), strict=True):
        assert abs(a - b) < 1e-4
    ckpt = "checkpoints/step-0000004/model.pt"
    ddp_w = torch.load(tmp_path / "ddp" / ckpt, weights_only=True)
    fsdp_w = torch.load(tmp_path / "fsdp" / ckpt, weights_only=True)
    assert ddp_w.keys() == fsdp_w.keys() and len(ddp_w) > 10
    for k in ddp_w:
        torch.testing.assert_close(ddp_w[k], fsdp_w[k], atol=1e-4, rtol=1e-3, msg=k)


@pytest.mark.slow
def test_fast_resume_on_another_number_of_ranks(tmp_path):
    """Two ranks train and stop; one process resumes (train.resume_data=fast) from their position."""
    from training.config import load_config
    from training.train import train

    manifest = write_demo_manifest(tmp_path / "cuts.jsonl.gz", 24, tasks=("asr", "sgc"), max_duration=3.6)
    fast = ["--set", "train.resume_data=fast", "--set", "data.buffer_size=6"]
    torchrun(manifest, tmp_path / "run", "--stop-after-steps", "2", *fast)
    seen = ids_by_rank(tmp_path / "run")
    overrides = ["optim.max_steps=4", "data.max_duration=8", "train.log_cut_ids=true", "data.buffer_size=6",
                 "train.log_every=1", "train.resume_data=fast"]  # fmt: skip
    cfg = load_config(TINY, overrides)
    with pytest.raises(ValueError, match="saved by 2 ranks"):
        train(load_config(TINY, ["optim.max_steps=4"]), [str(manifest)], tmp_path / "run", resume=True)
    train(cfg, [str(manifest)], tmp_path / "run", resume=True)
    log = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]
    later = [json.loads(x) for x in (tmp_path / "run" / "cut_ids.rank0.jsonl").read_text().splitlines()]
    before = {i for r in seen.values() for rec in r for i in rec["ids"] if rec["epoch"] == 0}
    after = {i for rec in later if rec["step"] > 2 and rec["epoch"] == 0 for i in rec["ids"]}
    assert after and not before & after
