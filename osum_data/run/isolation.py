"""Worker-death isolation: a shard that killed its worker twice (a segfault in native code, out of
memory) is bisected on the pool slot it died on until the cut(s) that kill the worker are found;
those are rejected (`worker_died`) and the rest of the shard is kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import ray
from ray.exceptions import RayTaskError

from osum_data.run.cluster import WORKER_DEATHS, RunError, cause_of
from osum_data.run.shard import SHARD_DIR, ShardInput, ShardState


class Pools(Protocol):
    """What the isolation needs of the scheduler (schedule.Scheduler), which imports this module."""

    run_dir: Path

    def replace_actor(self, g: Any, slot: int) -> None: ...

    def task_failure(self, f: Any, g: Any, e: RayTaskError) -> str: ...

DIED = (
    "the worker process died on this cut in stage {stage!r} (a crash in native code or out of memory), "
    "3 times; it was set aside so the rest of its shard could finish"
)


class Isolation:
    """Find the cuts of one shard's group input that kill a worker, by bisection on the slot the
    shard died on (its resources are the ones the stages need; nothing else is queued there while
    this runs), then run the group with them excluded. Each try writes the stage it is in to a trace
    file, so a death names its stage."""

    def __init__(self, sched: Pools, f: Any, g: Any):  # f: schedule.Flight, g: schedule.Group
        self.sched, self.f, self.g, self.slot = sched, f, g, f.slot
        self.trace = sched.run_dir / SHARD_DIR / f".trace.{f.shard.index:06d}.{g.index}"
        self.item: ShardInput | ShardState = f.item if isinstance(f.item, ShardInput) else ray.get(f.item)
        self.isolated: list[str] = []  # what was set aside, for the summary

    def _call(self, item: ShardInput | ShardState, exclude=None, write: bool = False) -> tuple[Any, Any]:
        actor = self.g.actors[self.slot]
        status, state = actor.process.remote(item, exclude=exclude, trace=str(self.trace), write=write)
        try:
            return ray.get(status), state
        except WORKER_DEATHS:
            self.sched.replace_actor(self.g, self.slot)
            raise
        except RayTaskError as e:
            raise RunError(self.sched.task_failure(self.f, self.g, e)) from cause_of(e)

    def _survives(self, positions: list[int]) -> bool:
        self.trace.unlink(missing_ok=True)
        try:
            self._call(self.item.subset(positions))
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

    def run(self) -> tuple[dict[str, Any], Any]:
        """(status, state) of the group run with the culprits excluded (rejected as `worker_died`)."""
        n = len(self.item)
        poison: dict[int, str] = {}
        self._find(list(range(n)), poison)
        exclude = {pos: (stage, "worker_died", DIED.format(stage=stage)) for pos, stage in poison.items()}
        self.isolated = [self.item.describe(pos) for pos in poison]
        try:
            result = self._call(self.item, exclude=exclude, write=True)
        except WORKER_DEATHS:
            # No single cut kills it, the shard does: set all of it aside rather than loop.
            stage = self._culprit_stage()
            together = "the worker died on this shard's cuts together, none alone"
            exclude = {pos: (stage, "worker_died", together) for pos in range(n)}
            result = self._call(self.item, exclude=exclude, write=True)
        self.trace.unlink(missing_ok=True)
        return result
