"""The Ray runner: streams a cut manifest in shards through a pipeline's stage chain.

The chain is split into groups of consecutive stages with equal resource needs; each group runs in
its own pool of Ray actors (a GPU aligner's pool holds GPUs, the CPU stages around it do not, and an
LLM stage's pool can be small while each actor keeps many requests in flight). Each actor builds its
stages once. A shard travels through the pools in order, its intermediate state in Ray's object
store (never in the driver), and the last pool writes it atomically.

The driver only reads input lines and schedules; a bounded number of shards is in flight, so its
memory does not grow with the corpus. A shard whose `done` file carries the same hash (config +
input lines) is skipped, so a killed run resumes where it stopped; shard files are named by
position, so the output is the same bytes whatever the number of workers.

A worker process that dies (segfault, out of memory) is replaced and its shard retried once, alone
on its actor; if it dies again, the shard's cuts are bisected on a separate actor until the cut(s)
that kill the worker are found; those are rejected (`worker_died`) and the rest of the shard kept.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import yaml
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError, WorkerCrashedError
from tqdm import tqdm

from osum_data.errors import Interrupted, OsumError
from osum_data.manifest_io import atomic_path, write_jsonl
from osum_data.run import outdir
from osum_data.run.config import PipelineConfig, StageSpec
from osum_data.run.inputs import InputError, InputScan, iter_shards, scan
from osum_data.run.shard import INPUT_STAGE, SHARD_DIR, ShardInput, ShardProcessor, read_done, shard_paths
from osum_data.run.signals import stop_on_sigterm
from osum_data.run.stage import FatalStageError, Resources, StageContext, add_counters, get_stage

log = logging.getLogger("osum_data.run")
WORKER_DEATHS = (RayActorError, WorkerCrashedError, ray.exceptions.OutOfMemoryError)


class RunError(OsumError):
    """A run that cannot go on; the message is one line for the user."""


@dataclass
class RunResult:
    summary: dict[str, Any]
    output_dir: Path


@ray.remote
class ShardWorker:
    """One actor of a group's pool: builds the group's stages once (model stages load here)."""

    def __init__(self, config: dict[str, Any], run_dir: str, stage_names: list[str], llm=None):
        self.processor = ShardProcessor(config, run_dir, stage_names, llm)

    def ready(self) -> int:
        return os.getpid()

    @ray.method(num_returns=2)
    def process(self, item, exclude=None, trace=None, write=True):
        return self.processor.process(item, exclude=exclude, trace=trace, write=write)


# --- groups and pools ------------------------------------------------------------------------


@dataclass
class Group:
    """Consecutive stages with equal resources, and the pool of actors that runs them."""

    index: int
    stages: list[StageSpec]
    resources: Resources
    size: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    actors: list[Any] = field(default_factory=list)
    load: list[int] = field(default_factory=list)
    exclusive: list[bool] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)  # shards dispatched per actor

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]


def split_groups(chain: list[StageSpec]) -> list[Group]:
    groups: list[Group] = []
    for spec in chain:
        if groups and groups[-1].resources == spec.resources:
            groups[-1].stages.append(spec)
        else:
            groups.append(Group(index=len(groups), stages=[spec], resources=spec.resources))
    return groups


def size_groups(groups: list[Group], workers: int, cluster: dict[str, float]) -> list[str]:
    """Pool sizes and per-actor resources that fit the cluster; returns warnings to show.

    A pool asking for GPUs on a cluster without any runs on CPU (stages must work there, slower);
    more actors than the cluster has CPUs would stay pending forever, so CPUs are shared.
    """
    notes = []
    gpus = cluster.get("GPU", 0.0)
    for g in groups:
        g.size = g.resources.concurrency or workers
        g.num_gpus = g.resources.num_gpus
        if g.num_gpus > 0 and gpus <= 0:
            notes.append(
                f"stages {', '.join(g.names)} ask for {g.num_gpus:g} GPU(s); the cluster has none, "
                "so they run on CPU"
            )
            g.num_gpus = 0.0
        elif g.num_gpus > 0:
            fit = max(1, int(gpus // g.num_gpus)) if g.num_gpus <= gpus else 1
            g.num_gpus = min(g.num_gpus, gpus)
            if g.size > fit:
                g.size = fit
    demand = sum(g.size * g.resources.num_cpus for g in groups)
    share = min(1.0, cluster.get("CPU", 1.0) / demand) if demand > 0 else 1.0
    for g in groups:
        g.num_cpus = g.resources.num_cpus * share
    return notes


def _new_actor(config: dict[str, Any], run_dir: Path, g: Group, llm: dict[str, Any] | None):
    return ShardWorker.options(
        num_cpus=g.num_cpus, num_gpus=g.num_gpus, max_restarts=0, max_task_retries=0
    ).remote(config, str(run_dir), g.names, llm)


def _start_pool(config: dict[str, Any], run_dir: Path, g: Group, llm: dict[str, Any] | None) -> None:
    g.actors = [_new_actor(config, run_dir, g, llm) for _ in range(g.size)]
    g.load = [0] * g.size
    g.exclusive = [False] * g.size
    g.sent = [0] * g.size
    _await_ready(g, g.actors)


def _await_ready(g: Group, actors: list[Any]) -> None:
    try:
        ray.get([a.ready.remote() for a in actors])
    except (RayTaskError, *WORKER_DEATHS) as e:
        raise RunError(f"stages {', '.join(g.names)} could not start on a worker: {_cause(e)}") from None


def _cause(e: BaseException) -> str:
    """The user-facing cause inside a Ray error (the original exception, one line)."""
    inner = getattr(e, "cause", None)
    if isinstance(inner, BaseException) and inner is not e:
        return _cause(inner)
    text = str(e).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if isinstance(e, RayTaskError | RayActorError) and lines:
        # Ray prefixes a traceback; the last line holds the exception.
        return lines[-1].strip()[:500]
    return f"{type(e).__name__}: {' '.join(lines)[:500]}" if lines else type(e).__name__


def cause_of(e: BaseException) -> BaseException:
    inner = getattr(e, "cause", None)
    return cause_of(inner) if isinstance(inner, BaseException) and inner is not e else e


# --- Ray ---------------------------------------------------------------------------------------


def ensure_ray(address: str | None, workers: int) -> None:
    """Connect to a cluster (`address`) or start a local Ray sized for `workers`."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # A failure the driver reports in one line (disk full, permission denied) would be followed by
    # Ray's log of every other in-flight shard's copy of it ("Unhandled error" tracebacks).
    os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")
    try:
        _ensure_ray(address, workers)
    finally:
        stop_on_sigterm()  # ray.init sets its own handler (sys.exit mid-call: a C++ abort)


def _ensure_ray(address: str | None, workers: int) -> None:
    if address:
        _connect(address)
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


@contextlib.contextmanager
def _stderr_into(sink: Any) -> Iterator[None]:
    """Redirect file descriptor 2 (Python's and Ray's C++ logging alike) into `sink` for a while."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(sink.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _unreachable(address: str, reason: str) -> RunError:
    return RunError(
        f"cannot reach the Ray cluster at {address}: {reason[:200]}; is `ray start --head` running there?"
    )


def _connect(address: str) -> None:
    """Join the cluster at `address`; an unreachable one is one line, within about 20 s.

    Ray retries a closed port for 40 s, so `host:port` is first tried with a plain TCP connection
    (5 s). While Ray retries a port that answers but is no GCS (about 20 s), its GCS client logs a
    warning a second: that log is held back."""
    import socket
    import tempfile

    hostport = re.fullmatch(r"(?:ray://)?([^:/\[\]]+):(\d+)", address)
    if hostport:
        try:
            socket.create_connection((hostport[1], int(hostport[2])), timeout=5).close()
        except OSError as e:
            why = "no answer within 5 s" if isinstance(e, TimeoutError) else e.strerror or type(e).__name__
            raise _unreachable(address, why) from None
    with tempfile.TemporaryFile() as held:
        try:
            with _stderr_into(held):
                ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
        except ConnectionError as e:
            cause = cause_of(e.__cause__) if e.__cause__ is not None else e
            lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
            reason = lines[-1].removeprefix("ray.exceptions.RpcError: ") if lines else type(e).__name__
            raise _unreachable(address, reason) from e
        held.seek(0)
        sys.stderr.write(held.read().decode("utf-8", "replace"))  # joined: what Ray said is shown


# --- the run -----------------------------------------------------------------------------------


@dataclass
class _Flight:
    """A shard on its way through the pools."""

    shard: ShardInput
    group: int = 0
    item: Any = None  # the group's input: the ShardInput, or the previous group's state ref
    attempts: int = 0
    slot: int = -1
    actor: Any = None  # the actor it was sent to (to replace a dead one only once)


class _Scheduler:
    def __init__(
        self, config: PipelineConfig, run_dir: Path, groups: list[Group], per_actor: int, bar, llm=None
    ):
        self.config_dict = config.to_dict()
        self.llm = llm  # resolved endpoint settings for LLM stages (not part of the config hash)
        self.run_dir = run_dir
        self.groups = groups
        self.per_actor = per_actor
        self.bar = bar
        self.in_flight: dict[Any, tuple[_Flight, Any]] = {}  # status ref -> (flight, state ref)
        self.ready: list[_Flight] = []
        self.stats: dict[int, dict[str, Any]] = {}
        self.worker_deaths = 0
        self.isolated: list[str] = []

    @property
    def capacity(self) -> int:
        return sum(g.size for g in self.groups) * self.per_actor

    def active(self) -> int:
        return len(self.in_flight) + len(self.ready)

    def submit_ready(self) -> None:
        # Later groups first: finishing shards frees object-store memory.
        self.ready.sort(key=lambda f: (-f.group, f.shard.index))
        waiting = []
        for f in self.ready:
            if not self._dispatch(f):
                waiting.append(f)
        self.ready = waiting

    def _dispatch(self, f: _Flight) -> bool:
        g = self.groups[f.group]
        free = [i for i in range(g.size) if not g.exclusive[i]]
        if f.attempts:
            free = [i for i in free if g.load[i] == 0]  # a suspect shard runs alone on its actor
        else:
            free = [i for i in free if g.load[i] < self.per_actor]
        if not free:
            return False
        # Least loaded first; among equals the one given fewest shards, so every actor gets work
        # even when shards trickle in one at a time from an earlier pool.
        slot = min(free, key=lambda i: (g.load[i], g.sent[i]))
        g.load[slot] += 1
        g.sent[slot] += 1
        g.exclusive[slot] = bool(f.attempts)
        f.slot, f.actor = slot, g.actors[slot]
        status, state = f.actor.process.remote(f.item)
        self.in_flight[status] = (f, state)
        return True

    def wait_one(self) -> None:
        done, _ = ray.wait(list(self.in_flight), num_returns=1)
        f, state = self.in_flight.pop(done[0])
        g = self.groups[f.group]
        g.load[f.slot] -= 1
        g.exclusive[f.slot] = False
        try:
            status = ray.get(done[0])
        except WORKER_DEATHS as e:
            self._worker_died(f, g, e)
            return
        except RayTaskError as e:
            raise RunError(self._task_failure(f, g, e)) from cause_of(e)
        self._advance(f, status, state)

    def _advance(self, f: _Flight, status: dict[str, Any], state: Any) -> None:
        if f.group + 1 < len(self.groups):
            self.ready.append(_Flight(f.shard, f.group + 1, state))
            return
        self.stats[status["index"]] = status
        self.bar.update(1)
        self.bar.set_postfix(
            cuts=sum(v["in"] for v in self.stats.values()),
            hours_out=f"{sum(v['hours_out'] for v in self.stats.values()):.2f}",
        )

    def _task_failure(self, f: _Flight, g: Group, e: RayTaskError) -> str:
        cause = cause_of(e)
        if isinstance(cause, FatalStageError):  # its message names what failed and what to do
            return str(cause)
        if isinstance(cause, OSError) and cause.errno == 28:
            return (
                f"disk full while writing shard {f.shard.index} into {self.run_dir} "
                f"({cause.filename or ''}); free space and run the same command again: finished shards "
                "are kept"
            )
        return f"shard {f.shard.index}, stages {', '.join(g.names)}: {_cause(e)}"

    def _replace(self, g: Group, slot: int) -> None:
        try:
            ray.kill(g.actors[slot])
        except Exception:  # already gone
            pass
        g.actors[slot] = _new_actor(self.config_dict, self.run_dir, g, self.llm)
        _await_ready(g, [g.actors[slot]])

    def _worker_died(self, f: _Flight, g: Group, e: BaseException) -> None:
        # Every shard queued on the dead actor fails with it; they are retried like this one, and
        # the actor is replaced once.
        if g.actors[f.slot] is f.actor:
            self.worker_deaths += 1
            self._replace(g, f.slot)
        f.attempts += 1
        if f.attempts < 2:
            log.warning("a worker died on shard %d (%s); retrying it alone", f.shard.index, _cause(e))
            self.ready.append(f)
            return
        log.warning("shard %d killed its worker twice; isolating the cut(s) responsible", f.shard.index)
        status, state = _Isolation(self, f, g).run()
        self._advance(f, status, state)


class _Isolation:
    """Find the cuts of one shard-group input that kill a worker, by bisection on the pool slot the
    shard died on (its resources are the ones the stages need; nothing else is queued there while
    this runs), then run the group with them excluded (rejected as `worker_died`)."""

    def __init__(self, sched: _Scheduler, f: _Flight, g: Group):
        self.sched, self.f, self.g, self.slot = sched, f, g, f.slot
        self.trace = sched.run_dir / SHARD_DIR / f".trace.{f.shard.index:06d}.{g.index}"
        self.item = f.item if isinstance(f.item, ShardInput) else ray.get(f.item)

    def _size(self) -> int:
        return len(self.item.lines) if isinstance(self.item, ShardInput) else len(self.item["cuts"])

    def _subset(self, positions: list[int]) -> Any:
        if isinstance(self.item, ShardInput):
            s = self.item
            return ShardInput(
                s.index,
                s.hash,
                [s.lines[i] for i in positions],
                [s.line_numbers[i] for i in positions],
                {j: s.pre_rejects[i] for j, i in enumerate(positions) if i in s.pre_rejects},
            )
        return {**self.item, "cuts": [self.item["cuts"][i] for i in positions], "rejects": [], "stages": []}

    def _call(self, item: Any, exclude=None, write: bool = False):
        actor = self.g.actors[self.slot]
        status, state = actor.process.remote(item, exclude=exclude, trace=str(self.trace), write=write)
        try:
            return ray.get(status), state
        except WORKER_DEATHS:
            self.sched.worker_deaths += 1
            self.sched._replace(self.g, self.slot)
            raise
        except RayTaskError as e:
            raise RunError(self.sched._task_failure(self.f, self.g, e)) from cause_of(e)

    def _survives(self, positions: list[int]) -> bool:
        self.trace.unlink(missing_ok=True)
        try:
            self._call(self._subset(positions))
            return True
        except WORKER_DEATHS:
            return False

    def _culprit_stage(self) -> str:
        try:
            return self.trace.read_text().strip() or self.g.names[0]
        except FileNotFoundError:
            return self.g.names[0]

    def _find(self, positions: list[int], poison: dict[int, str]) -> None:
        """Bisect: a group of cuts that survives is clean; one that kills is split until single."""
        if self._survives(positions):
            return
        if len(positions) == 1:
            poison[positions[0]] = self._culprit_stage()
            return
        mid = len(positions) // 2
        self._find(positions[:mid], poison)
        self._find(positions[mid:], poison)

    def _describe(self, pos: int) -> str:
        if isinstance(self.item, ShardInput):
            return f"input line {self.item.line_numbers[pos]}"
        return f"cut {self.item['cuts'][pos].id!r}"

    def run(self) -> tuple[dict[str, Any], Any]:
        n = self._size()
        poison: dict[int, str] = {}
        self._find(list(range(n)), poison)
        exclude = {
            pos: (
                stage,
                "worker_died",
                f"the worker process died on this cut in stage {stage!r} (a crash in native code or out of "
                "memory), 3 times; it was set aside so the rest of its shard could finish",
            )
            for pos, stage in poison.items()
        }
        for pos in poison:
            self.sched.isolated.append(self._describe(pos))
        try:
            result = self._call(self.item, exclude=exclude, write=True)
        except WORKER_DEATHS:
            # No single cut kills it, the shard does: set all of it aside rather than loop.
            stage = self._culprit_stage()
            exclude = {
                pos: (stage, "worker_died", "the worker died on this shard's cuts together, none alone")
                for pos in range(n)
            }
            result = self._call(self.item, exclude=exclude, write=True)
        self.trace.unlink(missing_ok=True)
        return result


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
        raise ValueError(f"workers must be >= 1, got {workers}")
    if config.source_stage is None and input_path is None:
        raise ValueError(f"pipeline {config.name!r} has no source stage: give --input")
    if config.source_stage is not None and input_path is not None:
        raise ValueError(
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
    sched = _Scheduler(config, out_dir, groups, per_actor, bar, llm)
    skipped = 0
    try:
        for g in groups:
            _start_pool(sched.config_dict, out_dir, g, llm)
        for shard in iter_shards(scanned, config.shard_size, config_hash):
            done = read_done(out_dir, shard.index)
            finished = done and done.get("hash") == shard.hash and not done.get("transient")
            if finished and shard_paths(out_dir, shard.index)["cuts"].exists():
                sched.stats[shard.index] = done
                skipped += 1
                bar.update(1)
                continue
            outdir.invalidate(out_dir, shard.index)
            sched.ready.append(_Flight(shard, 0, shard))
            sched.submit_ready()
            while sched.active() >= sched.capacity:
                sched.wait_one()
                sched.submit_ready()
        while sched.active():
            if sched.in_flight:
                sched.wait_one()
            sched.submit_ready()
    except KeyboardInterrupt:
        finished = len(sched.stats)
        raise Interrupted(
            f"interrupted: {finished} of {total_shards} shards are finished in {out_dir}; "
            "run the same command again to resume"
        ) from None
    finally:
        bar.close()
        for g in groups:
            for a in g.actors:
                ray.kill(a)

    n = len(sched.stats)
    outdir.remove_stale(out_dir, n)
    ordered = [sched.stats[i] for i in range(n)]
    outdir.concat([shard_paths(out_dir, i)["cuts"] for i in range(n)], out_dir / "cuts.jsonl.gz")
    outdir.concat([shard_paths(out_dir, i)["rejects"] for i in range(n)], out_dir / "rejects.jsonl.gz")
    summary = summarize(
        config,
        ordered,
        {
            "skipped_shards": skipped,
            "input": str(scanned.path),
            "input_digest": scanned.digest,
            "worker_deaths": sched.worker_deaths,
            "isolated": sched.isolated,
        },
    )
    if summary["in"] != scanned.lines:
        raise RunError(f"accounting broken: {scanned.lines} input lines but the shards saw {summary['in']}")
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return RunResult(summary=summary, output_dir=out_dir)


def summarize(config: PipelineConfig, stats: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    from collections import Counter, defaultdict

    reasons: Counter = Counter()
    by_task: dict[str, float] = defaultdict(float)
    cuts_task: Counter = Counter()
    by_label: dict[str, float] = defaultdict(float)
    names = [INPUT_STAGE] + [s.name for s in config.chain]
    stages = {name: {"stage": name, "in": 0, "out": 0, "rejected": 0, "derived": 0} for name in names}
    for s in stats:
        reasons.update(s["rejected_by_reason"])
        cuts_task.update(s["cuts_by_task"])
        for k, v in s["hours_by_task"].items():
            by_task[k] += v
        for k, v in s["hours_by_label"].items():
            by_label[k] += v
        for st in s["stages"]:
            for k in ("in", "out", "rejected", "derived"):
                stages[st["stage"]][k] += st[k]
            if st.get("counters"):
                add_counters(stages[st["stage"]].setdefault("counters", {}), st["counters"])
    total = {k: sum(s[k] for s in stats) for k in ("in", "out", "rejected", "derived")}
    transient = sum(s.get("transient", 0) for s in stats)
    chain = list(stages.values())
    for prev, cur in zip(chain, chain[1:], strict=False):
        if cur["in"] != prev["out"]:
            raise RunError(
                f"accounting broken: stage {cur['stage']!r} got {cur['in']} cuts, "
                f"{prev['stage']!r} passed {prev['out']}"
            )
    for st in chain:
        if st["in"] != st["out"] - st["derived"] + st["rejected"]:
            raise RunError(f"accounting broken in stage {st['stage']!r}: {st}")
    if total["in"] != total["out"] - total["derived"] + total["rejected"]:
        raise RunError(f"accounting broken: {total}")
    return {
        "pipeline": config.name,
        "config_hash": config.hash(),
        **total,
        "accounting": (
            f"in {total['in']} = out {total['out']} - derived {total['derived']} "
            f"+ rejected {total['rejected']}"
        ),
        "rejected_by_reason": dict(sorted(reasons.items())),
        # Rejected only because an endpoint was unreachable: their shards re-run on the next run.
        "transient_rejects": transient,
        "stages": chain,
        "hours_in": round(sum(s["hours_in"] for s in stats), 6),
        "hours_out": round(sum(s["hours_out"] for s in stats), 6),
        "cuts_by_task": dict(sorted(cuts_task.items())),
        "hours_by_task": {k: round(v, 6) for k, v in sorted(by_task.items())},
        "hours_by_label": {k: round(v, 6) for k, v in sorted(by_label.items())},
        "shards": len(stats),
        **extra,
    }


__all__ = [
    "InputError",
    "Interrupted",
    "RunError",
    "RunResult",
    "ensure_ray",
    "run_pipeline",
    "split_groups",
    "summarize",
]

_ = GetTimeoutError  # re-exported for callers that bound waits
