"""The Ray runner: streams a cut manifest in shards through a pipeline's stage chain.

The driver only reads input lines and schedules; a bounded number of shards is in flight, so its
memory does not grow with the corpus. Each Ray actor builds the stage chain once and writes each
shard it gets atomically. A shard whose `done` file carries the same hash (config + input lines) is
skipped, so a killed run resumes where it stopped; shard files are named by position, so the output
is the same bytes whatever the number of workers.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import yaml
from tqdm import tqdm

from osum_data.manifest_io import atomic_path
from osum_data.run.config import PipelineConfig
from osum_data.run.shard import SHARD_DIR, ShardProcessor, read_done, shard_paths


@dataclass
class RunResult:
    summary: dict[str, Any]
    output_dir: Path


@ray.remote
class ShardWorker:
    """One per worker: builds the stage chain once (model stages load their model here)."""

    def __init__(self, config: dict[str, Any]):
        self.processor = ShardProcessor(config)

    def run_shard(self, out_dir: str, index: int, shard_hash: str, lines: list[str]) -> dict[str, Any]:
        return self.processor.run_shard(Path(out_dir), index, shard_hash, lines)


def _open_lines(path: Path) -> Iterator[str]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield line.rstrip("\n")


def iter_shards(path: Path, shard_size: int, config_hash: str) -> Iterator[tuple[int, str, list[str]]]:
    """(index, hash, lines) per shard; the hash covers the config and the shard's exact input."""
    batch: list[str] = []
    index = 0
    for line in _open_lines(path):
        batch.append(line)
        if len(batch) == shard_size:
            yield index, _shard_hash(config_hash, batch), batch
            index, batch = index + 1, []
    if batch:
        yield index, _shard_hash(config_hash, batch), batch


def _shard_hash(config_hash: str, lines: list[str]) -> str:
    h = hashlib.sha256(config_hash.encode())
    for line in lines:
        h.update(line.encode())
        h.update(b"\n")
    return h.hexdigest()[:24]


def count_lines(path: Path) -> int:
    return sum(1 for _ in _open_lines(path))


def ensure_ray(address: str | None, workers: int) -> None:
    """Connect to a cluster (`address`) or start a local Ray sized for `workers`."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
    else:
        # address="local" always starts a private instance; plain ray.init() would silently join
        # whatever cluster happens to run on this machine.
        ray.init(
            address="local",
            num_cpus=max(workers, os.cpu_count() or 1),
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=True,
        )


def _cleanup_partial(out_dir: Path) -> None:
    """Remove temp files a killed run left behind (atomic writes never expose them)."""
    for tmp in (out_dir / SHARD_DIR).glob(".*.tmp*"):
        tmp.unlink(missing_ok=True)


def _concat(parts: list[Path], dest: Path) -> None:
    """Concatenate gzip shard files: a multi-member gzip stream is a valid gzip file, so the
    merged manifest costs a byte copy, not a recompression."""
    with atomic_path(dest) as tmp, open(tmp, "wb") as out:
        for p in parts:
            with open(p, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)


def _remove_stale(out_dir: Path, n_shards: int) -> None:
    """Shards past the end belong to an earlier, larger input: drop them so merging is exact."""
    for kind in ("cuts", "rejects", "done"):
        for p in (out_dir / SHARD_DIR).glob(f"{kind}.*.json*"):
            idx = p.name.split(".")[1]
            if idx.isdigit() and int(idx) >= n_shards:
                p.unlink()


def summarize(config: PipelineConfig, stats: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    reasons: Counter = Counter()
    by_task: dict[str, float] = defaultdict(float)
    cuts_task: Counter = Counter()
    by_label: dict[str, float] = defaultdict(float)
    for s in stats:
        reasons.update(s["rejected_by_reason"])
        cuts_task.update(s["cuts_by_task"])
        for k, v in s["hours_by_task"].items():
            by_task[k] += v
        for k, v in s["hours_by_label"].items():
            by_label[k] += v
    total_in = sum(s["in"] for s in stats)
    total_out = sum(s["out"] for s in stats)
    total_rej = sum(s["rejected"] for s in stats)
    return {
        "pipeline": config.name,
        "config_hash": config.hash(),
        "in": total_in,
        "out": total_out,
        "rejected": total_rej,
        "rejected_by_reason": dict(sorted(reasons.items())),
        "hours_in": round(sum(s["hours_in"] for s in stats), 6),
        "hours_out": round(sum(s["hours_out"] for s in stats), 6),
        "cuts_by_task": dict(sorted(cuts_task.items())),
        "hours_by_task": {k: round(v, 6) for k, v in sorted(by_task.items())},
        "hours_by_label": {k: round(v, 6) for k, v in sorted(by_label.items())},
        "shards": len(stats),
        **extra,
    }


def run_pipeline(
    config: PipelineConfig,
    input_path: str | Path,
    output_dir: str | Path,
    workers: int | None = None,
    address: str | None = None,
    progress: bool = True,
    max_in_flight_per_worker: int = 2,
) -> RunResult:
    """Run `config` over the cuts in `input_path` and write the output layout into `output_dir`."""
    input_path, out_dir = Path(input_path), Path(output_dir)
    if not input_path.exists():
        raise FileNotFoundError(f"input manifest not found: {input_path}")
    (out_dir / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    _cleanup_partial(out_dir)
    with atomic_path(out_dir / "pipeline.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(config.to_dict(), allow_unicode=True, sort_keys=False))

    workers = workers or os.cpu_count() or 1
    ensure_ray(address, workers)
    config_dict = config.to_dict()
    config_hash = config.hash()
    total_shards = -(-count_lines(input_path) // config.shard_size)

    # More workers than the cluster has CPUs would leave actors pending forever: share the CPUs.
    per_actor = min(1.0, ray.cluster_resources().get("CPU", 1.0) / workers)
    actors = [
        ShardWorker.options(num_cpus=per_actor, max_restarts=-1, max_task_retries=-1).remote(config_dict)
        for _ in range(workers)
    ]
    load = {i: 0 for i in range(workers)}  # shards queued per actor
    in_flight: dict[Any, int] = {}
    stats: dict[int, dict[str, Any]] = {}
    skipped = 0
    bar = tqdm(total=total_shards, unit="shard", disable=not progress, file=sys.stderr, desc=config.name)

    def collect_one() -> None:
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        load[in_flight.pop(ready[0])] -= 1
        s = ray.get(ready[0])
        stats[s["index"]] = s
        bar.update(1)
        bar.set_postfix(
            cuts=sum(v["in"] for v in stats.values()),
            hours_out=f"{sum(v['hours_out'] for v in stats.values()):.2f}",
        )

    try:
        for index, shard_hash, lines in iter_shards(input_path, config.shard_size, config_hash):
            done = read_done(out_dir, index)
            if done and done.get("hash") == shard_hash and shard_paths(out_dir, index)["cuts"].exists():
                stats[index] = done
                skipped += 1
                bar.update(1)
                continue
            while len(in_flight) >= workers * max_in_flight_per_worker:
                collect_one()
            slot = min(load, key=load.get)
            load[slot] += 1
            in_flight[actors[slot].run_shard.remote(str(out_dir), index, shard_hash, lines)] = slot
        while in_flight:
            collect_one()
    finally:
        bar.close()
        for a in actors:
            ray.kill(a)

    n = len(stats)
    _remove_stale(out_dir, n)
    ordered = [stats[i] for i in range(n)]
    _concat([shard_paths(out_dir, i)["cuts"] for i in range(n)], out_dir / "cuts.jsonl.gz")
    _concat([shard_paths(out_dir, i)["rejects"] for i in range(n)], out_dir / "rejects.jsonl.gz")
    summary = summarize(config, ordered, {"skipped_shards": skipped, "input": str(input_path)})
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return RunResult(summary=summary, output_dir=out_dir)
