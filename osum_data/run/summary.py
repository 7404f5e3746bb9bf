"""The run's summary: the shards' `done` records added up into summary.json, and the accounting
rule (per stage and in total: in = out - derived + rejected) checked once more over the whole run."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from osum_data.run.cluster import RunError
from osum_data.run.config import PipelineConfig
from osum_data.run.shard import INPUT_STAGE
from osum_data.run.stage import add_counters


def summarize(config: PipelineConfig, stats: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    """summary.json: totals, per-stage rows and per-task/label hours over the shards' `done` records,
    with every accounting rule checked (a broken one is a RunError, never a wrong summary)."""
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
