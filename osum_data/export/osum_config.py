"""OSUM `data_config` for a mix: per-dataset OSUM shard sets and the weights that reproduce the mix.

OSUM-EChat trains from a data config YAML (its `conf/data_*.yaml`): one entry per shard list, with
`path` (a `shards_list.txt`), `shard_num` and `weight`, where the weight repeats or subsamples that
list's shards when the training list is assembled (10: ten times; 0.1: a tenth of them). Exporting a
mix folder for OSUM therefore writes each dataset's *unique* training cuts once, as OSUM tar shards,
and puts the mix's repeat factor in `weight`, instead of writing repeated audio; the per-task dev and
test sets are exported beside them (`dev_shards_list.txt` is a ready `cv_data`).

`expand_data_config` assembles the shard list the way that config means it (whole copies, then a
seeded share of the shards for the fraction), for our tests and for trainers without OSUM's script.
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path
from typing import Any

import yaml

from osum_data.export.engine import RUN_DIR, concat_files, relative_or_absolute, write_summary
from osum_data.export.osum import run_osum_export
from osum_data.manifest_io import atomic_path

HEADER = """\
# OSUM data_config written by `osum-data export osum` from the mix at {mix}.
# One entry per dataset of the mix: `path` lists its OSUM tar shards (its unique training cuts),
# `weight` is the mix's repeat factor for it (2: every shard twice per pass; 0.5: half of them),
# `shard_num` the number of shards, and `task`/`hours`/`cuts` are for reading only.
# Dev/test sets: dev/<task>/shards_list.txt, test/<task>/shards_list.txt; dev_shards_list.txt joins
# the dev lists (OSUM's --cv_data).
"""


def export_osum_mix(
    mix_dir: Path,
    out: Path,
    shard_size: int = 1000,
    relative: bool = False,
    workers: int | None = None,
    address: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """One export run over the mix's unique cuts (each dataset's train split, every task's dev and
    test), grouped into `OUT/train/<task>/<dataset>/`, `OUT/dev/<task>/`, `OUT/test/<task>/`."""
    mix_dir, out = Path(mix_dir), Path(os.path.abspath(out))
    summary = json.loads((mix_dir / "summary.json").read_text())
    parts = [
        mix_dir / "plan" / "train" / task / f"{name}.jsonl.gz"
        for task, t in summary["tasks"].items()
        for name, ds in t["datasets"].items()
        if ds["unique"]["train"] and ds["factor"] > 0
    ]
    for split in ("dev", "test"):
        parts += [
            p
            for task in summary["tasks"]
            for p in sorted((mix_dir / "plan" / split / task).glob("*.jsonl.gz"))
        ]
    joined = out / RUN_DIR / "mix-unique.jsonl.gz"
    joined.parent.mkdir(parents=True, exist_ok=True)
    concat_files(parts, joined)
    report, groups = run_osum_export(
        joined, out, True, shard_size, workers, relative, address, progress, group_by_mix=True
    )
    config: dict[str, Any] = {}
    for task, t in summary["tasks"].items():
        for name, ds in t["datasets"].items():
            group = f"train/{task}/{name}"
            if group not in groups:
                continue
            lines = [
                json.loads(x) for x in (out / group / "data.list").read_text(encoding="utf-8").splitlines()
            ]
            config[f"{task}.{name}"] = {
                "path": relative_or_absolute(out / group / "shards_list.txt", out, relative),
                "shard_num": len(groups[group]),
                "weight": round(float(ds["factor"]), 6),
                "task": task,
                "cuts": len(lines),
                "hours": round(sum(x["extra"]["duration"] for x in lines) / 3600, 4),
            }
    with atomic_path(out / "data_config.yaml") as tmp:
        text = HEADER.format(mix=mix_dir) + yaml.safe_dump(config, allow_unicode=True, sort_keys=False)
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
        **{k: v for k, v in report.to_dict().items() if k != "out_dir"},
        "groups": {g: len(t) for g, t in groups.items()},
        "data_config": config,
    }
    write_summary(out, result)
    return result


def expand_data_config(path: str | Path, seed: int = 0) -> list[str]:
    """The training shard list a data_config means: for each entry, `floor(weight)` copies of its
    shards plus a seeded `weight - floor(weight)` share of them. Relative paths are taken relative to
    the config's folder."""
    path = Path(path)
    config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    shards: list[str] = []
    for name, entry in config.items():
        lst = Path(entry["path"]) if os.path.isabs(entry["path"]) else path.parent / entry["path"]
        listed = [s.strip() for s in lst.read_text(encoding="utf-8").splitlines() if s.strip()]
        listed = [s if os.path.isabs(s) else str(lst.parent / s) for s in listed]
        if len(listed) != entry["shard_num"]:
            raise ValueError(f"{path}: {name}: shard_num {entry['shard_num']} but {lst} lists {len(listed)}")
        weight = float(entry["weight"])
        whole = math.floor(weight)
        shards += listed * whole
        extra = round((weight - whole) * len(listed))
        shards += random.Random(f"{seed}:{name}").sample(listed, extra)
    return shards
