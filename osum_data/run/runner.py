"""The Ray runner: streams a cut manifest in shards through a pipeline's stage chain.

The driver reads input lines and schedules (schedule.py: pools of actors per group of stages, a
bounded number of shards in flight, so its memory does not grow with the corpus); a worker that
dies is replaced and its shard retried, then bisected down to the cut that kills it
(isolation.py); Ray itself is started or joined in cluster.py, and summary.json is added up in
summary.py. A shard whose `done` file carries the same hash (config + input lines) is skipped, so a
killed run resumes where it stopped; shard files are named by position, so the output is the same
bytes whatever the number of workers.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import yaml
from tqdm import tqdm

from osum_data.errors import Interrupted, UsageError
from osum_data.manifest_io import atomic_path, write_jsonl
from osum_data.run import outdir
from osum_data.run.cluster import RunError, ensure_ray
from osum_data.run.config import PipelineConfig
from osum_data.run.inputs import InputError, InputScan, iter_shards, scan
from osum_data.run.schedule import Scheduler, size_groups, split_groups
from osum_data.run.shard import read_done, shard_paths
from osum_data.run.stage import StageContext, get_stage
from osum_data.run.summary import summarize


@dataclass
class RunResult:
    summary: dict[str, Any]
    output_dir: Path


def _generate_source(config: PipelineConfig, out_dir: Path) -> Path:
    """Run the pipeline's source stage in the driver into `out_dir/source.jsonl.gz` (reused when
    the configuration is unchanged)."""
    spec = config.source_stage
    assert spec is not None
    path, marker = out_dir / "source.jsonl.gz", out_dir / "source.json"
    want = config.hash()
    try:
        if json.loads(marker.read_text()).get("config_hash") == want and path.exists():
            return path
    except (FileNotFoundError, json.JSONDecodeError):
        pass
    gen = get_stage(spec.stage).factory
    ctx = StageContext(seed=config.seed, shard_index=-1, run_dir=out_dir, stage=spec.name)
    try:
        n = write_jsonl(path, (cut.to_dict() for cut in gen(ctx, **spec.typed_params())))
    except Exception as e:
        raise RunError(f"source stage {spec.name!r} failed: {type(e).__name__}: {e}") from e
    with atomic_path(marker) as tmp:
        tmp.write_text(json.dumps({"config_hash": want, "cuts": n}))
    return path


def run_pipeline(
    config: PipelineConfig,
    input_path: str | Path | None,
    output_dir: str | Path,
    workers: int | None = None,
    address: str | None = None,
    progress: bool = True,
    max_in_flight_per_worker: int = 2,
    on_notice: Callable[[str], None] | None = None,
) -> RunResult:
    """Run `config` over the cuts in `input_path` (None for a pipeline with a source stage) and
    write the output layout into `output_dir`."""
    # Absolute: workers on other nodes (or started elsewhere) resolve paths in their own cwd.
    out_dir = Path(output_dir).absolute()
    if workers is not None and workers < 1:
        raise UsageError(f"workers must be >= 1, got {workers}")
    if config.source_stage is None and input_path is None:
        raise UsageError(f"pipeline {config.name!r} has no source stage: give --input")
    if config.source_stage is not None and input_path is not None:
        raise UsageError(
            f"pipeline {config.name!r} makes its own input ({config.source_stage.name}): drop --input"
        )
    notice = on_notice or (lambda m: print(f"note: {m}", file=sys.stderr))
    if input_path is not None:
        outdir.check_input_outside(out_dir, Path(input_path))
    with outdir.locked(out_dir):
        if input_path is None:
            input_path = _generate_source(config, out_dir)
        scanned = scan(Path(input_path))  # before any server or Ray starts: a broken input fails fast
        with _llm_endpoint(config, notice) as llm:
            return _run_locked(
                config, scanned, out_dir, workers, address, progress, max_in_flight_per_worker, notice, llm
            )


@contextlib.contextmanager
def _llm_endpoint(config: PipelineConfig, notice: Callable[[str], None]) -> Iterator[dict[str, Any] | None]:
    """For a pipeline with LLM stages: the endpoint the workers use, as JSON settings. With none
    configured, the embedded local server runs for the duration of the run."""
    if not config.uses_llm:
        yield None
        return
    from osum_data.llm.endpoint import resolve_endpoint

    settings = config.llm_settings()
    with resolve_endpoint(settings) as resolved:
        if not settings.env_base_url():
            notice(f"no LLM endpoint configured: using the embedded local server ({resolved.model})")
        yield resolved.model_dump(mode="json")


def _run_locked(
    config: PipelineConfig,
    scanned: InputScan,
    out_dir: Path,
    workers: int | None,
    address: str | None,
    progress: bool,
    per_actor: int,
    notice: Callable[[str], None],
    llm: dict[str, Any] | None = None,
) -> RunResult:
    config_hash = config.hash()
    identity = {"config_hash": config_hash, "input_digest": scanned.digest}
    moved = outdir.set_aside_previous(out_dir, identity)
    if moved:
        notice(f"the previous run's files in {out_dir} came from another config or input; moved to {moved}")
    outdir.cleanup_partial(out_dir)
    with atomic_path(out_dir / "pipeline.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(config.to_dict(), allow_unicode=True, sort_keys=False))
    outdir.write_identity(out_dir, identity)

    workers = workers or os.cpu_count() or 1
    ensure_ray(address, workers)
    groups = split_groups(config.chain)
    for note in size_groups(groups, workers, ray.cluster_resources()):
        notice(note)
    total_shards = -(-scanned.lines // config.shard_size)
    bar = tqdm(total=total_shards, unit="shard", disable=not progress, file=sys.stderr, desc=config.name)
    sched = Scheduler(config, out_dir, groups, per_actor, bar, llm)
    skipped = 0
    try:
        sched.start_pools()
        for shard in iter_shards(scanned, config.shard_size, config_hash):
            done = read_done(out_dir, shard.index)
            finished = done and done.get("hash") == shard.hash and not done.get("transient")
            if finished and shard_paths(out_dir, shard.index)["cuts"].exists():
                sched.stats[shard.index] = done
                skipped += 1
                bar.update(1)
                continue
            outdir.invalidate(out_dir, shard.index)
            sched.add(shard)
        sched.drain()
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted: {len(sched.stats)} of {total_shards} shards are finished in {out_dir}; "
            "run the same command again to resume"
        ) from None
    finally:
        bar.close()
        sched.stop_pools()

    n = len(sched.stats)
    outdir.remove_stale(out_dir, n)
    outdir.concat([shard_paths(out_dir, i)["cuts"] for i in range(n)], out_dir / "cuts.jsonl.gz")
    outdir.concat([shard_paths(out_dir, i)["rejects"] for i in range(n)], out_dir / "rejects.jsonl.gz")
    extra = {
        "skipped_shards": skipped,
        "input": str(scanned.path),
        "input_digest": scanned.digest,
        "worker_deaths": sched.worker_deaths,
        "isolated": sched.isolated,
    }
    summary = summarize(config, [sched.stats[i] for i in range(n)], extra)
    if summary["in"] != scanned.lines:
        raise RunError(f"accounting broken: {scanned.lines} input lines but the shards saw {summary['in']}")
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return RunResult(summary=summary, output_dir=out_dir)


__all__ = ["InputError", "Interrupted", "RunError", "RunResult", "ensure_ray", "run_pipeline", "split_groups"]
