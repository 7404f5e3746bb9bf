"""Scheduling: the pools of Ray actors that run a pipeline's groups of stages, and the loop that
sends shards through them.

The chain is split into groups of consecutive stages with equal resource needs; each group runs in
its own pool (a GPU aligner's pool holds GPUs, the CPU stages around it do not, and an LLM stage's
pool can be small while each actor keeps many requests in flight). Each actor builds its stages
once. A shard travels through the pools in order, its `ShardState` in Ray's object store (never in
the driver), and the last pool writes it. At most `per_actor` shards wait on an actor, so the
driver's memory does not grow with the corpus.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayTaskError

from osum_data.run.cluster import WORKER_DEATHS, RunError, cause_of, cause_text
from osum_data.run.config import PipelineConfig, StageSpec
from osum_data.run.isolation import Isolation
from osum_data.run.shard import ShardInput, ShardProcessor
from osum_data.run.stage import FatalStageError, Resources

log = logging.getLogger("osum_data.run")


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


def _await_ready(g: Group, actors: list[Any]) -> None:
    try:
        ray.get([a.ready.remote() for a in actors])
    except (RayTaskError, *WORKER_DEATHS) as e:
        raise RunError(f"stages {', '.join(g.names)} could not start on a worker: {cause_text(e)}") from None


@dataclass
class Flight:
    """A shard on its way through the pools."""

    shard: ShardInput
    group: int = 0
    item: Any = None  # the group's input: the ShardInput, or the previous group's ShardState ref
    attempts: int = 0
    slot: int = -1
    actor: Any = None  # the actor it was sent to (to replace a dead one only once)


class Scheduler:
    """Sends shards through the pools: least-loaded actor first, later groups first (finishing
    shards frees object-store memory); a shard whose worker died is retried alone on a fresh actor,
    and on a second death handed to `Isolation`."""

    def __init__(
        self, config: PipelineConfig, run_dir: Path, groups: list[Group], per_actor: int, bar, llm=None
    ):
        self.config_dict = config.to_dict()
        self.llm = llm  # resolved endpoint settings for LLM stages (not part of the config hash)
        self.run_dir = run_dir
        self.groups = groups
        self.per_actor = per_actor
        self.bar = bar
        self.in_flight: dict[Any, tuple[Flight, Any]] = {}  # status ref -> (flight, state ref)
        self.ready: list[Flight] = []
        self.stats: dict[int, dict[str, Any]] = {}
        self.worker_deaths = 0
        self.isolated: list[str] = []

    def _new_actor(self, g: Group):
        return ShardWorker.options(
            num_cpus=g.num_cpus, num_gpus=g.num_gpus, max_restarts=0, max_task_retries=0
        ).remote(self.config_dict, str(self.run_dir), g.names, self.llm)

    def start_pools(self) -> None:
        for g in self.groups:
            g.actors = [self._new_actor(g) for _ in range(g.size)]
            g.load, g.exclusive, g.sent = [0] * g.size, [False] * g.size, [0] * g.size
            _await_ready(g, g.actors)

    def stop_pools(self) -> None:
        for g in self.groups:
            for a in g.actors:
                ray.kill(a)

    @property
    def capacity(self) -> int:
        return sum(g.size for g in self.groups) * self.per_actor

    def active(self) -> int:
        return len(self.in_flight) + len(self.ready)

    def add(self, shard: ShardInput) -> None:
        """Queue a shard and keep at most `capacity` in flight (waiting for results meanwhile)."""
        self.ready.append(Flight(shard, 0, shard))
        self.submit_ready()
        while self.active() >= self.capacity:
            self.wait_one()
            self.submit_ready()

    def drain(self) -> None:
        while self.active():
            if self.in_flight:
                self.wait_one()
            self.submit_ready()

    def submit_ready(self) -> None:
        # Later groups first: finishing shards frees object-store memory.
        self.ready.sort(key=lambda f: (-f.group, f.shard.index))
        self.ready = [f for f in self.ready if not self._dispatch(f)]

    def _dispatch(self, f: Flight) -> bool:
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
            raise RunError(self.task_failure(f, g, e)) from cause_of(e)
        self._advance(f, status, state)

    def _advance(self, f: Flight, status: dict[str, Any], state: Any) -> None:
        if f.group + 1 < len(self.groups):
            self.ready.append(Flight(f.shard, f.group + 1, state))
            return
        self.finished(status)

    def finished(self, status: dict[str, Any]) -> None:
        """A shard is written (or was already): count it and show the totals so far."""
        self.stats[status["index"]] = status
        self.bar.update(1)
        self.bar.set_postfix(
            cuts=sum(v["in"] for v in self.stats.values()),
            hours_out=f"{sum(v['hours_out'] for v in self.stats.values()):.2f}",
        )

    def task_failure(self, f: Flight, g: Group, e: RayTaskError) -> str:
        cause = cause_of(e)
        if isinstance(cause, FatalStageError):  # its message names what failed and what to do
            return str(cause)
        if isinstance(cause, OSError) and cause.errno == 28:
            return (
                f"disk full while writing shard {f.shard.index} into {self.run_dir} "
                f"({cause.filename or ''}); free space and run the same command again: finished shards "
                "are kept"
            )
        return f"shard {f.shard.index}, stages {', '.join(g.names)}: {cause_text(e)}"

    def replace_actor(self, g: Group, slot: int) -> None:
        """A worker died: kill what is left of its actor and start a fresh one in its slot."""
        self.worker_deaths += 1
        try:
            ray.kill(g.actors[slot])
        except Exception:  # already gone
            pass
        g.actors[slot] = self._new_actor(g)
        _await_ready(g, [g.actors[slot]])

    def _worker_died(self, f: Flight, g: Group, e: BaseException) -> None:
        # Every shard queued on the dead actor fails with it; they are retried like this one, and
        # the actor is replaced once.
        if g.actors[f.slot] is f.actor:
            self.replace_actor(g, f.slot)
        f.attempts += 1
        if f.attempts < 2:
            log.warning("a worker died on shard %d (%s); retrying it alone", f.shard.index, cause_text(e))
            self.ready.append(f)
            return
        log.warning("shard %d killed its worker twice; isolating the cut(s) responsible", f.shard.index)
        isolation = Isolation(self, f, g)
        status, state = isolation.run()
        self.isolated += isolation.isolated
        self._advance(f, status, state)
