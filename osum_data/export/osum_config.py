"""OSUM `data_config` for a mix: per-dataset OSUM shard sets whose weights OSUM's own rule realises.

OSUM trains from a data config YAML (`conf/data_*.yaml`): one entry per shard list, with `path` (a
`shards_list.txt`) and `weight`. Its `handle_data_for_weight.py` (re-implemented in osum_weights.py)
takes `int(weight)` copies of every shard, or, when that is 0, `int(len(shards) * weight)` random
shards: a fractional weight is cut down (6.16 -> 6) and a weight < 1 on a short list is 0 shards.
So the export never writes a fractional weight. The mix realises a dataset's repeat factor as
`repeats` whole copies plus one more copy of a fixed subset of its train cuts (the `extra_cuts` with
the smallest subsample draws, mix/plan.py); the export writes exactly that as two disjoint shard sets,
`train/<task>/<dataset>/x<repeats+1>` (the subset) and `.../x<repeats>` (the rest), each with its
copy count as an integer weight. OSUM's rule then reproduces the mix's planned counts exactly,
whatever the shard size, and the export checks it with that rule (each task's share within
`TOLERANCE`, no task dropped) before it writes `data_config.yaml`.

Train cuts the mix does not use (repeats 0, outside the subset) are not exported. The per-task dev
and test sets are exported beside them (`dev_shards_list.txt` is a ready `cv_data`).
`expand_data_config` applies OSUM's rule to a written config, for tests and for trainers without
OSUM's script.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from osum_data.errors import UsageError
from osum_data.export.engine import RUN_DIR, concat_files, relative_or_absolute, write_summary
from osum_data.export.mix_folder import plan_dir, plan_path, subsample_draw
from osum_data.export.osum import run_osum_export
from osum_data.export.osum_dialect import DEFAULT_DIALECT, load_dialect, scan_manifest, write_prompt_config
from osum_data.export.osum_weights import (
    OSUM_SEED,
    Realised,
    TaskShare,
    add,
    compare_shares,
    expand_like_osum,
)
from osum_data.manifest_io import atomic_path, dumps, open_jsonl_writer, read_jsonl

HEADER = """\
# OSUM data_config written by `osum-data export osum` from the mix at {mix}.
# One entry per copy group of a dataset: `path` lists its OSUM tar shards, `weight` is how many times
# OSUM takes every one of them per pass (an integer, so OSUM's handle_data_for_weight.py rule gives
# exactly the mix's counts), `shard_num` the number of shards; `task`/`cuts`/`hours` are for reading.
# Dev/test sets: dev/<task>/shards_list.txt, test/<task>/shards_list.txt; dev_shards_list.txt joins
# the dev lists (OSUM's --cv_data). Instructions: prompt_config.yaml (dialect {dialect}).
"""


class OsumMixError(UsageError):
    """A mix whose proportions OSUM's weighting rule cannot reproduce in this export."""


def copy_counts(path: Path, dataset: str, repeats: int, extra: int, seed: int) -> np.ndarray:
    """Copies per train cut of one dataset, in file order: `repeats`, plus one for the `extra` cuts
    with the smallest subsample draws (the mix's own remainder subset; ties keep file order)."""
    draws = [
        subsample_draw(seed, dataset, ((d.get("custom") or {}).get("mix") or {}).get("source_id") or d["id"])
        for d in read_jsonl(path)
    ]
    copies = np.full(len(draws), repeats, dtype=np.int64)
    order = np.argsort(np.asarray(draws, dtype=np.uint64), kind="stable")
    copies[order[: min(extra, len(draws))]] += 1
    return copies


def _dataset_plan(ds: dict[str, Any]) -> tuple[int, int]:
    """(repeats, extra_cuts) of a dataset in a mix summary (older summaries: from its factor)."""
    if "repeats" in ds and "extra_cuts" in ds:
        return int(ds["repeats"]), int(ds["extra_cuts"])
    factor = float(ds.get("factor", 0.0))
    repeats = int(np.floor(factor + 1e-9))
    return repeats, round((factor - repeats) * int(ds["unique"]["train"]))


def _write_training_input(mix_dir: Path, summary: dict[str, Any], dest: Path) -> dict[str, dict[str, float]]:
    """Each used train cut once, tagged with `custom.mix.copies`; returns the planned cuts and hours
    per task. A task the mix plans but that has nothing to export fails here, before any work."""
    seed = int(summary.get("seed", 0))
    planned: dict[str, dict[str, float]] = {}
    with open_jsonl_writer(dest) as f:
        for task, t in summary["tasks"].items():
            written = 0
            for name, ds in t["datasets"].items():
                plan = planned.setdefault(task, {"cuts": 0.0, "hours": 0.0})
                plan["cuts"] += float(ds.get("planned_cuts", 0))
                plan["hours"] += float(ds.get("planned_hours", 0.0))
                path = plan_path(mix_dir, "train", task, name)
                if not ds["unique"]["train"] or not path.exists():
                    continue
                repeats, extra = _dataset_plan(ds)
                copies = copy_counts(path, name, repeats, extra, seed)
                # one copy group after the other, so each group's cuts fill whole tar shards
                for group in sorted({int(k) for k in copies if k > 0}, reverse=True):
                    for d, k in zip(read_jsonl(path), copies, strict=True):
                        if k != group:
                            continue
                        custom = dict(d.get("custom") or {})
                        custom["mix"] = {**(custom.get("mix") or {}), "copies": group}
                        d["custom"] = custom
                        f.write(dumps(d) + "\n")
                        written += 1
            if planned.get(task, {}).get("cuts", 0) > 0 and written == 0:
                raise OsumMixError(
                    f"task {task!r}: the mix plans {planned[task]['cuts']:.0f} training cuts but its plan "
                    f"files under {plan_dir(mix_dir, 'train', task)} hold none to export; rebuild the mix"
                )
    return planned


def check_shares(
    planned: dict[str, float], got: dict[str, Realised], unit: str, rejects: Path
) -> list[TaskShare]:
    """Each task's share of a pass under OSUM's rule against the mix's plan; OsumMixError naming
    every task that would be dropped or is off by more than the tolerance."""
    shares = compare_shares({t: v for t, v in planned.items() if v > 0}, got)
    bad = [s for s in shares if not s.ok]
    if bad:
        raise OsumMixError(
            "OSUM's weighting rule would not reproduce the mix: "
            + "; ".join(
                f"task {s.task!r} planned {s.planned:.6g} {unit} ({s.planned_share:.2%}), "
                + (
                    "dropped"
                    if s.dropped
                    else f"realised {s.low:.6g} ({s.realised_share:.2%}, off {s.error:.2%})"
                )
                for s in bad
            )
            + f"; see {rejects} for cuts the export rejected"
        )
    return shares


def export_osum_mix(
    mix_dir: Path,
    out: Path,
    shard_size: int = 1000,
    relative: bool = False,
    workers: int | None = None,
    address: str | None = None,
    progress: bool = False,
    dialect: str = DEFAULT_DIALECT,
) -> dict[str, Any]:
    """One export run over the mix's used train cuts (each once) and every task's dev and test cuts,
    grouped into `OUT/train/<task>/<dataset>/x<copies>/`, `OUT/dev/<task>/`, `OUT/test/<task>/`;
    then `data_config.yaml`, checked with OSUM's rule against the mix's planned shares."""
    mix_dir, out = Path(mix_dir), Path(os.path.abspath(out))
    summary = json.loads((mix_dir / "summary.json").read_text())
    unit = "hours" if summary.get("unit") == "hours" else "cuts"
    train_part = out / RUN_DIR / "mix-train.jsonl.gz"
    train_part.parent.mkdir(parents=True, exist_ok=True)
    planned = _write_training_input(mix_dir, summary, train_part)
    parts = [train_part]
    for split in ("dev", "test"):
        parts += [
            p for task in summary["tasks"] for p in sorted(plan_dir(mix_dir, split, task).glob("*.jsonl.gz"))
        ]
    joined = out / RUN_DIR / "mix-unique.jsonl.gz"
    concat_files(parts, joined)
    chosen = load_dialect(dialect)
    prompt_keys = scan_manifest(joined, chosen)  # before any work: keys and tags the dialect lacks
    report, groups = run_osum_export(
        joined,
        out,
        True,
        shard_size,
        workers,
        relative,
        address,
        progress,
        group_by_mix=True,
        dialect=dialect,
    )
    write_prompt_config(out, prompt_keys, chosen)
    config: dict[str, Any] = {}
    got: dict[str, Realised] = {}
    for group in sorted(g for g in groups if g.startswith("train/")):
        _, task, name, tag = group.split("/")
        copies = int(tag.removeprefix("x"))
        lines = [json.loads(x) for x in (out / group / "data.list").read_text(encoding="utf-8").splitlines()]
        hours = sum(x["extra"]["duration"] for x in lines) / 3600
        config[f"{task}.{name}.{tag}"] = {
            "path": relative_or_absolute(out / group / "shards_list.txt", out, relative),
            "shard_num": len(groups[group]),
            "weight": copies,
            "task": task,
            "cuts": len(lines),
            "hours": round(hours, 4),
        }
        amount = float(len(lines)) if unit == "cuts" else hours
        got[task] = add(
            got.get(task, Realised(0, 0.0, 0.0)),
            Realised(len(groups[group]) * copies, copies * amount, copies * amount),
        )
    shares = check_shares({t: p[unit] for t, p in planned.items()}, got, unit, out / "rejects.jsonl.gz")
    with atomic_path(out / "data_config.yaml") as tmp:
        text = HEADER.format(mix=mix_dir, dialect=dialect) + yaml.safe_dump(
            config, allow_unicode=True, sort_keys=False
        )
        tmp.write_text(text, encoding="utf-8")
    dev = [p for g, tars in sorted(groups.items()) if g.startswith("dev/") for p in tars]
    with atomic_path(out / "dev_shards_list.txt") as tmp:
        tmp.write_text("".join(f"{relative_or_absolute(p, out, relative)}\n" for p in dev), encoding="utf-8")
    result = {
        "type": "export",
        "format": "osum",
        "mix": str(mix_dir),
        "out_dir": str(out),
        "relative": relative,
        "dialect": dialect,
        **{k: v for k, v in report.to_dict().items() if k != "out_dir"},
        "groups": {g: len(t) for g, t in groups.items()},
        "data_config": config,
        "prompt_keys": prompt_keys,
        "osum_plan": {
            "unit": unit,
            "tolerance": 0.02,
            "tasks": {
                s.task: {
                    "planned": round(s.planned, 6),
                    "planned_share": round(s.planned_share, 6),
                    "realised": round(s.high, 6),
                    "realised_share": round(s.realised_share, 6),
                    "error": round(s.error, 6),
                }
                for s in shares
            },
        },
    }
    write_summary(out, result)
    return result


def expand_data_config(path: str | Path, seed: int = OSUM_SEED) -> list[str]:
    """The training shard list OSUM's rule (osum_weights.expand_like_osum) makes from a written
    data_config, with relative paths taken relative to the config's folder; a `shard_num` that
    disagrees with its list is a ValueError."""
    path = Path(path)
    config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}

    def resolve(p: str) -> Path:
        return Path(p) if os.path.isabs(p) else path.parent / p

    lists: dict[str, list[str]] = {}
    for name, entry in config.items():
        lst = resolve(entry["path"])
        listed = [s.strip() for s in lst.read_text(encoding="utf-8").splitlines() if s.strip()]
        listed = [s if os.path.isabs(s) else str(lst.parent / s) for s in listed]
        if "shard_num" in entry and len(listed) != entry["shard_num"]:
            raise ValueError(f"{path}: {name}: shard_num {entry['shard_num']} but {lst} lists {len(listed)}")
        lists[str(entry["path"])] = listed
    return expand_like_osum(config, lambda p: lists[p], seed)
