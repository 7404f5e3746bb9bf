"""OSUM's own rule for turning `data_config.yaml` weights into a training shard list, re-implemented.

OSUM (ASLP-lab/OSUM, `common_utils/handle_data_for_weight.py`) builds the list it trains on per pass
like this, for every entry of the config in order:

- `int(float(weight))` >= 1: that many copies of every shard of the entry's list (a fraction is
  dropped: 2.9 gives 2 copies);
- otherwise `int(len(shards) * float(weight))` shards drawn at random (0.433 of one shard is 0
  shards: the entry is dropped);

then the joined list is shuffled (its `random` module seeded with 7890) and reversed. An export is
only right if this rule, not the weights' face value, gives the mix's proportions, so the exporter
and the audit both compute what the rule realises with the functions here (tests check them
against cases worked by hand from that source).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from osum_data.errors import UsageError

OSUM_SEED = 7890  # handle_data_for_weight.py seeds Python's `random` with this
TOLERANCE = 0.02  # largest relative error of a task's share that an export may have


def whole_copies(weight: float | str) -> int:
    """`int(float(weight))`: the copies of every shard OSUM takes (0 sends it to the fraction rule)."""
    return int(float(weight))


def shards_taken(weight: float | str, n_shards: int) -> int:
    """How many shard entries one entry adds to OSUM's list per pass."""
    copies = whole_copies(weight)
    if copies != 0:
        return copies * n_shards
    return max(0, int(n_shards * float(weight)))


def expand_like_osum(
    config: Mapping[str, Mapping[str, Any]],
    load_list: Callable[[str], list[str]],
    seed: int = OSUM_SEED,
) -> list[str]:
    """The shard list OSUM's rule makes from `config` (entries with `path` and `weight`);
    `load_list(path)` returns an entry's shard paths. Same seed, same list."""
    rng = random.Random(seed)
    total: list[str] = []
    for entry in config.values():
        listed = load_list(str(entry["path"]))
        copies = whole_copies(entry["weight"])
        if copies == 0:
            fraction = float(entry["weight"])
            if fraction < 0:
                raise UsageError(f"negative weight {entry['weight']!r} for {entry['path']}")
            total.extend(rng.sample(listed, int(len(listed) * fraction)))
        else:
            total.extend(listed * copies)
    rng.shuffle(total)
    return total[::-1]


@dataclass(frozen=True)
class Realised:
    """What one config entry contributes per pass: shard entries and the range of cuts (or hours)
    they hold; `low == high` unless random shards of unequal size are drawn."""

    shards: int
    low: float
    high: float

    @property
    def exact(self) -> bool:
        return self.low == self.high


def realised(weight: float | str, shard_sizes: Sequence[float]) -> Realised:
    """Cuts (or hours, given per-shard hours) that OSUM's rule takes from an entry whose shards hold
    `shard_sizes`: exact for whole copies, the smallest and largest possible draw for a fraction."""
    copies = whole_copies(weight)
    n = len(shard_sizes)
    if copies != 0:
        total = copies * float(sum(shard_sizes))
        return Realised(copies * n, total, total)
    k = shards_taken(weight, n)
    ordered = sorted(float(s) for s in shard_sizes)
    low = sum(ordered[:k])
    high = sum(ordered[n - k :]) if k else 0.0
    return Realised(k, low, high)


@dataclass(frozen=True)
class TaskShare:
    """One task's planned and realised amount and share of the training pass."""

    task: str
    planned: float
    low: float
    high: float
    planned_share: float
    realised_share: float  # from the middle of the realised range
    error: float  # worst relative error of the share over the realised range

    @property
    def dropped(self) -> bool:
        return self.planned > 0 and self.high <= 0

    @property
    def ok(self) -> bool:
        return not self.dropped and self.error <= TOLERANCE + 1e-12


def compare_shares(planned: Mapping[str, float], got: Mapping[str, Realised]) -> list[TaskShare]:
    """Per task, the share OSUM's rule realises against the planned share. `got` maps a task to the
    sum of its entries' `Realised`; the error is the worst over the realised range (the other tasks at
    the opposite end of theirs)."""
    total_plan = sum(planned.values())
    out = []
    for task, want in planned.items():
        r = got.get(task, Realised(0, 0.0, 0.0))
        others_low = sum(g.low for t, g in got.items() if t != task)
        others_high = sum(g.high for t, g in got.items() if t != task)
        p_share = want / total_plan if total_plan else 0.0
        lo_share = r.low / (r.low + others_high) if r.low + others_high else 0.0
        hi_share = r.high / (r.high + others_low) if r.high + others_low else 0.0
        mid_total = sum((g.low + g.high) / 2 for g in got.values())
        mid = (r.low + r.high) / 2 / mid_total if mid_total else 0.0
        error = max(abs(lo_share / p_share - 1), abs(hi_share / p_share - 1)) if p_share else 0.0
        out.append(TaskShare(task, want, r.low, r.high, p_share, mid, error))
    return out


def add(a: Realised, b: Realised) -> Realised:
    return Realised(a.shards + b.shards, a.low + b.low, a.high + b.high)
