"""Audit of an OSUM export folder: what OSUM itself would make of it.

`check_osum_export(folder)` returns rows `{check, task, status, detail}` (status ok / warn / fail) for
`osum-data audit DIR` when DIR is an OSUM export:

- `prompt_config`: OUT/prompt_config.yaml exists and holds an instruction for every key written (a
  key OSUM finds no prompt for trains without one, or crashes OSUM v1's filter());
- `instructions`: every instruction there agrees with its key's target layout (instruction_agrees);
- `dialect_keys`, `dialect_tags`, `extra_tags`: every key, target tag and `extra` tag written exists
  in the export's dialect (summary.json `dialect`, osum_dialects.yaml);
- `leading_tag` (warn): OSUM-EChat's processor.py strips a tag at the start of `txt`, which eats an
  X-only label or the first timestamp;
- `osum_proportion`: per task, the share of a training pass OSUM's weighting rule realises from
  data_config.yaml (osum_weights.py, from the shards actually listed) against the mix's planned
  share; fail when a task is dropped or off by more than 2 %.
"""

from __future__ import annotations

import json
import tarfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import yaml

from osum_data.export.engine import RUN_DIR
from osum_data.export.osum_dialect import (
    DEFAULT_DIALECT,
    PROMPT_CONFIG,
    key_problem,
    load_dialect,
)
from osum_data.export.osum_weights import TOLERANCE, Realised, add, compare_shares, realised
from osum_data.tasks import instruction_agrees, registry
from osum_data.tasks.formats import _TAG

Row = dict[str, str]


def _row(check: str, task: str, status: str, detail: str) -> Row:
    return {"check": check, "task": task, "status": status, "detail": detail}


def _data_lists(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("data.list") if RUN_DIR not in p.relative_to(folder).parts[:1])


def _lines(folder: Path):
    for path in _data_lists(folder):
        with open(path, encoding="utf-8") as f:
            for n, text in enumerate(f, 1):
                if text.strip():
                    yield path, n, json.loads(text)


def _resolve(base: Path, p: str) -> Path:
    q = Path(p)
    return q if q.is_absolute() else base / q


def _shard_sizes(list_path: Path, hours: bool) -> list[float]:
    """Samples (or hours) per tar shard of a shards_list.txt, from the tar members themselves."""
    sizes = []
    for line in list_path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        total = 0.0
        with tarfile.open(_resolve(list_path.parent, line.strip())) as tar:
            for member in tar:
                if hours and member.name.endswith(".duration"):
                    data = tar.extractfile(member)
                    total += float(data.read().decode()) / 3600 if data else 0.0
                elif not hours and member.name.endswith(".txt"):
                    total += 1
        sizes.append(total)
    return sizes


def _planned(folder: Path, summary: dict[str, Any]) -> tuple[dict[str, float], str] | None:
    """The mix's planned amount per task and its unit: from the export's summary, else the mix's."""
    plan = summary.get("osum_plan")
    if plan:
        return {t: float(v["planned"]) for t, v in plan["tasks"].items()}, plan["unit"]
    mix = Path(summary["mix"]) / "summary.json" if summary.get("mix") else None
    if mix is None or not mix.is_file():
        return None
    data = json.loads(mix.read_text(encoding="utf-8"))
    unit = "hours" if data.get("unit") == "hours" else "cuts"
    field = "planned_hours" if unit == "hours" else "planned_cuts"
    return {
        t: float(sum(ds.get(field, 0) for ds in v["datasets"].values())) for t, v in data["tasks"].items()
    }, unit


def _proportions(folder: Path, summary: dict[str, Any]) -> list[Row]:
    config_path = folder / "data_config.yaml"
    if not config_path.is_file():
        return []
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    planned = _planned(folder, summary)
    if planned is None:
        return [
            _row("osum_proportion", "", "warn", "data_config.yaml without the mix's plan to compare with")
        ]
    plan, unit = planned
    got: dict[str, Realised] = {}
    rows: list[Row] = []
    for name, entry in config.items():
        task = entry.get("task") or name.split(".")[0]
        sizes = _shard_sizes(_resolve(folder, entry["path"]), unit == "hours")
        r = realised(entry["weight"], sizes)
        if r.high <= 0 and sizes:
            rows.append(
                _row(
                    "osum_proportion", task, "fail", f"entry {name}: weight {entry['weight']} takes no shard"
                )
            )
        got[task] = add(got.get(task, Realised(0, 0.0, 0.0)), r)
    for s in compare_shares({t: v for t, v in plan.items() if v > 0}, got):
        if s.dropped:
            rows.append(
                _row(
                    "osum_proportion",
                    s.task,
                    "fail",
                    f"planned {s.planned_share:.2%} of a pass; OSUM's rule takes none",
                )
            )
            continue
        detail = (
            f"planned {s.planned:.6g} {unit} ({s.planned_share:.2%}), OSUM's rule realises "
            f"{s.low:.6g}"
            + (f"-{s.high:.6g}" if s.high != s.low else "")
            + f" ({s.realised_share:.2%}, off {s.error:.2%})"
        )
        rows.append(_row("osum_proportion", s.task, "ok" if s.error <= TOLERANCE + 1e-12 else "fail", detail))
    return rows


def check_osum_export(folder: Path) -> list[Row]:
    """Rows of the OSUM checks for the export at `folder` (see the module docstring)."""
    folder = Path(folder)
    summary_path = folder / "summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    rows: list[Row] = []
    name = summary.get("dialect")
    if not name:
        rows.append(_row("dialect", "", "warn", f"no dialect in summary.json; checked as {DEFAULT_DIALECT}"))
        name = DEFAULT_DIALECT
    dialect = load_dialect(name)
    reg = registry()
    prompt_path = folder / PROMPT_CONFIG
    prompts: dict[str, list[str]] | None = None
    if prompt_path.is_file():
        prompts = yaml.safe_load(prompt_path.read_text(encoding="utf-8")) or {}
    else:
        rows.append(
            _row("prompt_config", "", "fail", f"no {PROMPT_CONFIG}: OSUM would draw no instruction of ours")
        )

    cuts: Counter[str] = Counter()
    bad: dict[tuple[str, str], list[str]] = defaultdict(list)  # (check, key) -> examples
    leading: Counter[str] = Counter()
    for path, n, line in _lines(folder):
        key, txt, extra = line.get("task", ""), line.get("txt", ""), line.get("extra") or {}
        where = f"{line.get('key')!r} ({path.relative_to(folder)}:{n})"
        cuts[key] += 1
        try:
            problem = key_problem(dialect, key)
        except KeyError:
            problem = f"{key!r} is no task key of ours"
        if problem:
            bad[("dialect_keys", key)].append(f"{where}: {problem}")
            continue
        task, x_only = reg.task_for_key(key)
        for tag in _TAG.findall(txt):
            numeric = task.format == "timestamps" and tag[1:-1].replace(".", "", 1).isdigit()
            if not numeric and tag not in dialect.all_tags():
                bad[("dialect_tags", key)].append(
                    f"{where}: tag {tag} is not in dialect {dialect.name}'s tag sets"
                )
                break
        for field_name in dialect.extra_tags:
            value = extra.get(field_name)
            if value and value not in dialect.tag_set(field_name):
                bad[("extra_tags", key)].append(
                    f"{where}: extra.{field_name} {value!r} is not a {dialect.name} tag"
                )
        if task.instruction == "sample":
            if not (dialect.question_field and str(extra.get(dialect.question_field) or "").strip()):
                bad[("prompt_config", key)].append(
                    f"{where}: no extra.{dialect.question_field} to carry its question"
                )
        elif prompts is not None and not prompts.get(key):
            bad[("prompt_config", key)].append(f"{where}: {PROMPT_CONFIG} has no instructions for {key}")
        if dialect.strips_leading_tag and txt.startswith("<"):
            leading[key] += 1
    for key in sorted(cuts):
        checks = (
            ("dialect_keys",)
            if ("dialect_keys", key) in bad
            else ("dialect_keys", "dialect_tags", "extra_tags", "prompt_config")
        )
        for check in checks:
            examples = bad.get((check, key))
            if examples:
                rows.append(
                    _row(check, key, "fail", f"{len(examples)} of {cuts[key]} sample(s); first {examples[0]}")
                )
            else:
                rows.append(_row(check, key, "ok", f"{cuts[key]} sample(s)"))
        if leading[key]:
            rows.append(
                _row(
                    "leading_tag",
                    key,
                    "warn",
                    f"{leading[key]} target(s) start with a tag, which OSUM-EChat's processor.py strips"
                )
            )
    for key, items in (prompts or {}).items():
        try:
            reasons = [r for r in (instruction_agrees(key, t) for t in items or []) if r]
        except KeyError:
            rows.append(
                _row("instructions", key, "fail", f"{PROMPT_CONFIG} key {key!r} is no task key of ours")
            )
            continue
        status = "fail" if reasons else "ok"
        rows.append(
            _row(
                "instructions",
                key,
                status,
                reasons[0] if reasons else f"{len(items or [])} instruction(s) agree",
            )
        )
    rows += _proportions(folder, summary)
    return rows
