"""The per-task table of a plan (`make demo`, `run-all`): which task arrived, with how many samples.

A plan lists runs; each run's pipeline plans one task (its template stage's `task:`). After the
runs and the mix, this table says per planned task: the runs that feed it, their samples and hours
of it, the mix's samples of it (train + dev + test) and the runs' main reject reasons. A
multi-label sample counts for each task whose labels it carries (so rows overlap). A task with 0
samples is missing, and a run whose rejects are mostly endpoint failures (the LLM server did not
answer) failed: either makes the plan fail (DESIGN: a task with 0 samples is a failure, never a
quiet "Done"). The plan writes the table to `OUT/tasks.json`; the report shows it at its top.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

TABLE_FILE = "tasks.json"
# Reject codes that say an endpoint did not answer (the LLM client's transient codes), not that the
# content was judged: a run rejecting mostly for these did not do its work.
ENDPOINT_CODES = frozenset({"unavailable", "bad_request", "batch_pending", "endpoint_down", "circuit_open"})
TOP_REASONS = 3


def task_of_key(key: str) -> str | None:
    """The task id of a task key (`<TRANSCRIBE> <GENDER>` -> sgc), None for an unknown key."""
    from osum_data.tasks import registry

    reg = registry()
    return reg.task_for_key(key)[0].id if key in reg.all_keys else None


def covered_tasks(task: str) -> list[str]:
    """The tasks a sample of `task` teaches: itself and, for a multi-label task, each label task whose
    labels it carries (a `<TRANSCRIBE> <AGE> <GENDER>` sample is an SAP and an SGC sample too: the
    demo's SAP run writes only those, so SAP arrives through them)."""
    from osum_data.tasks import registry

    tasks = registry().tasks
    labels = set(tasks[task].labels)
    if len(labels) < 2:
        return [task]
    return [task] + [t.id for t in tasks.values() if t.id != task and t.labels and set(t.labels) < labels]


def planned_task(stage_params: list[dict[str, Any]]) -> str | None:
    """The task a run's pipeline makes: the `task` parameter of its stages (the template stage)."""
    from osum_data.tasks import registry

    for params in stage_params:
        task = params.get("task")
        if isinstance(task, str) and task in registry().tasks:
            return task
    return None


def _code(reason: str) -> str:
    return reason.rsplit(":", 1)[-1]


def endpoint_rejects(summary: dict[str, Any]) -> int:
    """Rejects of a run that are endpoint failures (by code, or flagged transient by the stage)."""
    by_code = sum(
        n for r, n in (summary.get("rejected_by_reason") or {}).items() if _code(r) in ENDPOINT_CODES
    )
    return max(by_code, int(summary.get("transient_rejects") or 0))


def run_problem(name: str, summary: dict[str, Any]) -> str | None:
    """Why a run failed although it finished: most of its rejects are endpoint failures."""
    rejected = int(summary.get("rejected") or 0)
    failed = endpoint_rejects(summary)
    if rejected and failed * 2 > rejected:
        reasons = summary.get("rejected_by_reason") or {}
        worst = max((r for r in reasons if _code(r) in ENDPOINT_CODES), key=reasons.get, default="transient")
        return (
            f"run {name!r}: {failed} of {rejected} rejects are endpoint failures ({worst}): "
            "the LLM endpoint did not answer; fix it and run the same command again (finished "
            "shards are kept, these are redone)"
        )
    return None


def build_table(
    output: Path, planned: dict[str, str | None], mix: bool, labelling: Iterable[str] = ()
) -> dict[str, Any]:
    """The table from the runs' and the mix's summaries under `output`. `planned` maps each run to
    the task its pipeline makes (None: a run without a task of its own, e.g. a source of speech).
    The `labelling` runs label other runs' samples (a quality run): their cuts carry those runs'
    task keys and are not counted again; their problems still are."""
    labelling = set(labelling)
    runs: dict[str, dict[str, Any]] = {}
    for name in planned:
        path = output / name / "summary.json"
        runs[name] = json.loads(path.read_text()) if path.is_file() else {}
    tasks: dict[str, dict[str, Any]] = {}
    other: list[str] = []  # problems of runs that plan no task of their own

    def row(task: str) -> dict[str, Any]:
        return tasks.setdefault(
            task, {"task": task, "runs": [], "samples": 0, "hours": 0.0, "rejects": {}, "problems": []}
        )

    for name, task in planned.items():
        if task is not None:
            row(task)["runs"].append(name)
    for name, summary in runs.items():
        hours = summary.get("hours_by_task") or {}
        counted = {} if name in labelling else summary.get("cuts_by_task") or {}
        for key, n in counted.items():
            made = task_of_key(key)
            if made is None:
                continue
            for task in covered_tasks(made):
                if task != made and task not in tasks:
                    continue  # a label task nobody planned is not added for a multi-label sample
                r = row(task)
                if name not in r["runs"]:
                    r["runs"].append(name)
                r["samples"] += int(n)
                r["hours"] += float(hours.get(key, 0.0))
        task = planned.get(name)
        problem = run_problem(name, summary) if summary else None
        if task is None:
            if problem:
                other.append(problem)
            continue
        r = row(task)
        for reason, n in (summary.get("rejected_by_reason") or {}).items():
            r["rejects"][reason] = r["rejects"].get(reason, 0) + int(n)
        if problem:
            r["problems"].append(problem)
    mix_summary = _read(output / "mix" / "summary.json") if mix else None
    for task, r in tasks.items():
        if mix_summary is not None:
            mixed = [t for name, t in (mix_summary.get("tasks") or {}).items() if task in _covers(name)]
            r["mix_samples"] = sum(
                int(t.get(k) or 0) for t in mixed for k in ("train_cuts", "dev_cuts", "test_cuts")
            )
            r["mix_train_hours"] = round(sum(float(t.get("train_hours") or 0.0) for t in mixed), 6)
        r["hours"] = round(r["hours"], 6)
        top = sorted(r["rejects"].items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_REASONS]
        r["rejects"] = dict(top)
        if r["samples"] == 0:
            why = _why_empty(r["runs"], runs)
            r["problems"].insert(0, f"0 samples ({why})")
        elif r.get("mix_samples") == 0:
            r["problems"].insert(0, "0 samples in the mix (the runs made some; see the mix summary)")
        idle = [n for n in r["runs"] if planned.get(n) == task and not int(runs[n].get("out") or 0)]
        if idle and r["samples"]:  # the task arrived through other runs; a run planned for it did not
            r["problems"].insert(0, f"a planned run made no samples ({_why_empty(idle, runs)})")
        r["status"] = "ok" if not r["problems"] else "MISSING" if r["samples"] == 0 else "FAILED"
    ordered = [tasks[t] for t in _order(tasks)]
    complete = not other and all(r["status"] == "ok" for r in ordered)
    return {"tasks": ordered, "other_problems": other, "complete": complete}


def _covers(task: str) -> list[str]:
    from osum_data.tasks import registry

    return covered_tasks(task) if task in registry().tasks else [task]


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _why_empty(names: list[str], runs: dict[str, dict[str, Any]]) -> str:
    parts = []
    for name in names:
        s = runs.get(name) or {}
        if not s:
            parts.append(f"run {name!r} did not finish")
            continue
        reasons = s.get("rejected_by_reason") or {}
        main = max(reasons, key=reasons.get) if reasons else None
        what = f"{s.get('in', 0)} in, {s.get('out', 0)} out"
        parts.append(f"run {name!r}: {what}" + (f", mostly {main} ({reasons[main]})" if main else ""))
    return "; ".join(parts) or "no run makes it"


def _order(tasks: dict[str, Any]) -> list[str]:
    """Registry order (asr, srwt, ved, ...), unknown names last."""
    from osum_data.tasks import registry

    known = list(registry().tasks)
    return sorted(tasks, key=lambda t: (known.index(t) if t in known else len(known), t))


def problems(table: dict[str, Any]) -> list[str]:
    """One line per task that did not arrive (or whose run failed), for the plan's error."""
    out = [f"{r['task']}: {'; '.join(r['problems'])}" for r in table["tasks"] if r["problems"]]
    return out + list(table.get("other_problems") or [])


def format_table(table: dict[str, Any]) -> str:
    """The table as aligned text for the terminal."""
    has_mix = any("mix_samples" in r for r in table["tasks"])
    head = ["task", "status", "samples", "hours"] + (["mix"] if has_mix else []) + ["runs", "main rejects"]
    lines = []
    for r in table["tasks"]:
        rejects = ", ".join(f"{k} {v}" for k, v in r["rejects"].items()) or "-"
        cells = [r["task"], r["status"], str(r["samples"]), f"{r['hours']:.4f}"]
        cells += [str(r.get("mix_samples", "-"))] if has_mix else []
        cells += [",".join(r["runs"]) or "-", rejects]
        lines.append(cells)
    widths = [max(len(x) for x in col) for col in zip(head, *lines, strict=False)]
    fmt = "  ".join(f"{{:{w}}}" for w in widths[:-1]) + "  {}"
    return "\n".join(fmt.format(*cells) for cells in [head, *lines])


def write_table(output: Path, table: dict[str, Any]) -> Path:
    from osum_data.manifest_io import atomic_path

    path = output / TABLE_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(table, indent=2, ensure_ascii=False) + "\n")
    return path


def read_table(root: Path) -> dict[str, Any] | None:
    """The plan's table in `root` (a plan's output folder), None if it holds none."""
    path = Path(root) / TABLE_FILE
    try:
        table = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return table if isinstance(table, dict) and isinstance(table.get("tasks"), list) else None
