"""Plans: several pipelines over configured corpora, then the mix, exports, report and a short training.

`osum-data run-all PLAN.yaml --output DIR` and `osum-data demo` (with `pipelines/demo.yaml`) both run
a plan. Sections, each optional except `runs`:

    inputs:                      # named input manifests
      asterisk: {builder: "osum_data.demo:asterisk_input"}   # a function (output_dir, limit) -> cuts path
      iemocap: {prepare: iemocap, corpus_dir: /data/IEMOCAP}  # `osum-data prepare` into DIR/inputs/NAME
      mine: {manifest: /data/mine/cuts.jsonl.gz}              # an existing manifest
    runs:                        # pipelines, in order
      - {name: asr, pipeline: pipelines/asr.yaml, input: asterisk, set: [shard_size=100]}
        # input: an input name, an earlier run's name (its kept cuts), a list of them (concatenated),
        # or none (a source pipeline); absent: the first input. In `set:`, ${name} is the manifest
        # of that input or earlier run (side inputs: augment.noise=${noise}).
    export:                      # per-run exports (each run's OUT/<run>/<format>/)
      osum: {shards: true}
    mix:                         # MIX.yaml content; `tasks:` may be left out: every run becomes a
      shard_size: 200            # dataset of each task its samples belong to (weight 1 each), and a
      tasks:                     # dataset may name a run instead of a manifest
        asr: {weight: 1, datasets: [{run: asr}]}
    mix_export: [osum, hf]       # exports of the mix (`osum-data export` formats) into DIR/export/<format>
    report: true                 # `osum-data report DIR`
    train:                       # a short run of the bundled trainer on the mixed Shar
      config: training/configs/tiny.yaml
      steps: 4
      set: [data.max_duration=20]

Paths in the plan are relative to the current directory (the repository root for the bundled plans).
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from osum_data.manifest_io import read_jsonl
from osum_data.yaml_config import ConfigError, load_yaml

PLAN_KEYS = ("inputs", "runs", "export", "mix", "mix_export", "report", "train", "description")


def _builder(path: str) -> Callable[[Path, int | None], Path]:
    """`module:function` -> the function (an input builder `(output dir, limit) -> cuts path`)."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def load_plan(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"plan file not found: {path}")
    plan = load_yaml(path.read_text(encoding="utf-8")) or {}
    if not isinstance(plan, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    unknown = sorted(set(plan) - set(PLAN_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(PLAN_KEYS)})")
    if not plan.get("runs"):
        raise ConfigError(f"{path}: no runs")
    names = [r.get("name") for r in plan["runs"]]
    if len(set(names)) != len(names) or None in names:
        raise ConfigError(f"{path}: every run needs a distinct name (got {names})")
    for run in plan["runs"]:
        if not Path(run.get("pipeline", "")).is_file():
            raise ConfigError(f"{path}: run {run['name']!r}: pipeline file not found: {run.get('pipeline')}")
    return plan


def build_input(name: str, entry: dict[str, Any], output: Path, limit: int | None) -> Path:
    if "builder" in entry:
        return Path(_builder(entry["builder"])(output, limit))
    if "manifest" in entry:
        path = Path(entry["manifest"]).expanduser()
        if not path.exists():
            raise ConfigError(f"input {name!r}: manifest not found: {path}")
        return path / "cuts.jsonl.gz" if path.is_dir() else path
    if "prepare" in entry:
        from osum_data.corpora import prepare

        report = prepare(entry["prepare"], Path(entry["corpus_dir"]).expanduser(), output / "inputs" / name)
        print(report.summary())
        return output / "inputs" / name / "cuts.jsonl.gz"
    raise ConfigError(f"input {name!r}: give one of builder, manifest, prepare (+ corpus_dir)")


def expand_paths(override: str, manifests: dict[str, Path]) -> str:
    """`key=${name}` -> `key=<manifest of that input or earlier run>` (side inputs in `set:`)."""
    for name, path in manifests.items():
        override = override.replace("${" + name + "}", str(path))
    if "${" in override:
        raise ConfigError(f"plan: {override!r} names no input or earlier run ({', '.join(manifests)})")
    return override


def run_input(run: str, source: Any, manifests: dict[str, Path], output: Path) -> Path | None:
    """The manifest a run reads: one input or earlier run, several of them concatenated (a list),
    or none (null / "none": a pipeline with a source stage)."""
    if source in (None, "none", []):
        return None
    names = [source] if isinstance(source, str) else list(source)
    for name in names:
        if name not in manifests:
            raise ConfigError(f"run {run!r}: input {name!r} is neither an input nor an earlier run")
    if len(names) == 1:
        return manifests[names[0]]
    from osum_data.manifest_io import write_jsonl

    path = output / "inputs" / f"{run}.jsonl.gz"
    write_jsonl(path, (d for name in names for d in read_jsonl(manifests[name])))
    return path


def run_plan(
    plan_path: str | Path,
    output: Path,
    workers: int = 2,
    limit: int | None = None,
    progress: bool = True,
    address: str | None = None,
) -> dict[str, Any]:
    """Run every section of the plan; returns the summaries by step name."""
    from osum_data.run.config import load_pipeline
    from osum_data.run.runner import run_pipeline

    plan = load_plan(plan_path)
    output = Path(output)
    started = time.monotonic()
    manifests: dict[str, Path] = {}
    results: dict[str, Any] = {}
    for name, entry in (plan.get("inputs") or {}).items():
        manifests[name] = build_input(name, entry, output, limit)
        results[f"input:{name}"] = {"cuts": sum(1 for _ in read_jsonl(manifests[name]))}
    for run in plan["runs"]:
        overrides = [expand_paths(str(x), manifests) for x in run.get("set", []) or []]
        config = load_pipeline(run["pipeline"], overrides)
        # absent: the first input (the bundled plans' corpus); null or "none": a source pipeline
        source = run.get("input", next(iter(plan.get("inputs") or {}), None))
        res = run_pipeline(
            config,
            run_input(run["name"], source, manifests, output),
            output / run["name"],
            workers=workers,
            address=address,
            progress=progress,
        )
        manifests[run["name"]] = output / run["name"] / "cuts.jsonl.gz"
        results[run["name"]] = res.summary
        s = res.summary
        from osum_data.demo import write_example

        example = write_example(manifests[run["name"]], output / "examples", run["name"])
        if example is not None:
            print(f"[{run['name']}] listen: {example}")
        print(f"[{run['name']}] " + json.dumps({k: s[k] for k in ("in", "out", "rejected", "derived")}))
        print(f"[{run['name']}] rejected by reason: {json.dumps(s['rejected_by_reason'])}")
        print(
            f"[{run['name']}] hours out: {s['hours_out']:.4f}, by task: "
            f"{json.dumps(s['hours_by_task'], ensure_ascii=False)}"
        )
        for fmt, opts in (plan.get("export") or {}).items():
            if run.get("export", True):
                results[f"{run['name']}_export"] = _export(
                    fmt,
                    manifests[run["name"]],
                    output / run["name"] / fmt,
                    opts,
                    workers,
                    address,
                    run["name"],
                )
    if plan.get("mix") is not None:
        results["mix"] = _mix(plan, output, workers, address, progress)
        for fmt in plan.get("mix_export") or []:
            results[f"mix_export:{fmt}"] = _export(
                fmt, output / "mix", output / "export" / fmt, {}, workers, address, "mix"
            )
    if plan.get("train"):
        results["train"] = _train(plan["train"], output)
    if plan.get("report"):
        from osum_data.report import build_report

        page = build_report(output)
        results["report"] = str(page)
        print(f"[report] {page}")
    _where_to_look(output, plan, results)
    print(f"\nDone in {time.monotonic() - started:.0f} s.")
    return results


def _export(
    fmt: str, cuts: Path, out: Path, opts: dict[str, Any], workers: int, address: str | None, label: str
) -> dict[str, Any]:
    from osum_data.export.formats import describe, export

    opts = dict(opts or {})
    summary = export(
        fmt, cuts, out, shards=bool(opts.pop("shards", False)), workers=workers, address=address, **opts
    )
    print(f"[{label}] " + describe(summary))
    return {k: summary.get(k) for k in ("exported", "rejected", "splits")}


def mix_config_of(plan: dict[str, Any], output: Path) -> dict[str, Any]:
    """The plan's `mix:` section as MIX.yaml content: `run:` datasets resolved to the runs' manifests,
    and, without `tasks:`, every run as a dataset of its task."""
    from osum_data.tasks import registry

    mix = dict(plan["mix"] or {})
    tasks = mix.get("tasks")
    if not tasks:
        tasks = {}
        for run in plan["runs"]:
            summary = json.loads((output / run["name"] / "summary.json").read_text())
            ids = sorted(
                {
                    registry().task_for_key(k)[0].id
                    for k in summary.get("cuts_by_task", {})
                    if k in registry().all_keys
                }
            )
            if not ids:
                continue
            for task in ids:  # a run with samples of several tasks feeds each with its own samples
                name = run["name"] if len(ids) == 1 else f"{run['name']}-{task}"
                entry = tasks.setdefault(task, {"weight": 1.0, "datasets": []})
                entry["datasets"].append({"run": run["name"], "name": name})
    resolved = {}
    for task, entry in tasks.items():
        entry = dict(entry)
        datasets = []
        for ds in entry.get("datasets", []):
            if isinstance(ds, dict) and "run" in ds:
                ds = {
                    **{k: v for k, v in ds.items() if k != "run"},
                    "name": ds.get("name", ds["run"]),
                    "manifest": str(output / ds["run"] / "cuts.jsonl.gz"),
                }
            datasets.append(ds)
        entry["datasets"] = datasets
        resolved[task] = entry
    mix["tasks"] = resolved
    return mix


def _mix(
    plan: dict[str, Any], output: Path, workers: int, address: str | None, progress: bool
) -> dict[str, Any]:
    from osum_data.mix.build import build_mix
    from osum_data.mix.config import build_mix_config

    cfg = build_mix_config(mix_config_of(plan, output), "plan: mix")
    res = build_mix(cfg, output / "mix", workers=workers, address=address, progress=progress)
    s = res.summary
    shares = {t: f"{v['realised_share']:.3f} (target {v['target_share']:.3f})" for t, v in s["tasks"].items()}
    print(
        f"[mix] {s['out']} training cuts, {s['hours_out']:.3f} h in {res.output_dir / 'train'}; "
        f"shares {shares}"
    )
    held = {t: (v["dev_cuts"], v["test_cuts"]) for t, v in s["tasks"].items()}
    print(f"[mix] dev/test cuts per task: {held}")
    return {k: s[k] for k in ("out", "hours_out", "cuts_by_task", "rejected")}


def _train(spec: dict[str, Any], output: Path) -> dict[str, Any]:
    """A short CPU run of the bundled trainer on the mixed Shar, through its CLI."""
    train_dir = output / "train"
    cmd = [
        sys.executable,
        "-m",
        "training.train",
        "--config",
        str(spec.get("config", "training/configs/tiny.yaml")),
        "--train",
        str(output / "mix" / "train"),
        "--output",
        str(train_dir),
        "--max-steps",
        str(int(spec.get("steps", 4))),
    ]
    for item in spec.get("set", []) or []:
        cmd += ["--set", str(item)]
    print(f"[train] {' '.join(cmd[1:])}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"training failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"
        )
    log = train_dir / "train_log.jsonl"
    records = [json.loads(x) for x in log.read_text().splitlines() if x.strip()] if log.exists() else []
    losses = [r["loss"] for r in records if "loss" in r]
    if losses:
        print(f"[train] {len(losses)} logged steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}; log {log}")
    return {
        "steps": len(losses),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
    }


def _where_to_look(output: Path, plan: dict[str, Any], results: dict[str, Any]) -> None:
    print("\nWhere to look:")
    for run in plan["runs"]:
        print(
            f"  {output / run['name']}/summary.json   the {run['name']} run (cuts.jsonl.gz, rejects.jsonl.gz)"
        )
    if (output / "examples").is_dir():
        print(f"  {output / 'examples'}/   one sample of each run to listen to (.wav) and read (.txt)")
    if "mix" in results:
        print(f"  {output / 'mix'}/summary.json   the mix: target vs realised shares, dev/test per task")
        print(f"  {output / 'mix'}/train/          the training set (Lhotse Shar, 16 kHz FLAC)")
    for key in results:
        if key.startswith("mix_export:"):
            print(
                f"  {output / 'export' / key.split(':', 1)[1]}/   the mix exported as {key.split(':', 1)[1]}"
            )
    if "train" in results:
        print(f"  {output / 'train'}/train_log.jsonl   the short training run")
    if "report" in results:
        print(f"  {results['report']}   the report (open in a browser)")
