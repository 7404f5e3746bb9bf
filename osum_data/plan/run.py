"""Running a validated plan: inputs, runs, exports, the mix, the per-task table, training, report.

Each step reads the typed `Plan` (osum_data.plan.config), whose defaults live there only. A second
run into the same folder reuses what is unchanged: finished runs (`finished_run`), exports and the
mix (a marker file with the digest of what they read), and the training checkpoints when the mix and
the trainer config are the same (see `_train`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from osum_data.errors import OsumError
from osum_data.llm.server import shared_embedded_servers
from osum_data.manifest_io import atomic_path, open_manifest, read_jsonl
from osum_data.plan.config import (
    ExportOptions,
    InputEntry,
    Plan,
    TrainEntry,
    builder_function,
    expand_paths,
    load_plan,
    resolve_runs,
)
from osum_data.plan.examples import write_example
from osum_data.report.quality import QUALITY_STAGES_PREFIX, compare_sources, format_comparison
from osum_data.report.tasks import build_table, format_table, planned_task, problems, write_table
from osum_data.yaml_config import ConfigError

EXPORT_MARKER = "plan_export.json"
MIX_MARKER = "plan_mix.json"
TRAIN_MARKER = "plan_train.json"


class PlanIncomplete(OsumError):
    """The plan ran to its end but a planned task has no samples, or a run's endpoint failed (a
    runtime error: exit 1). The message names each task and why, in one line."""


def build_input(name: str, entry: InputEntry, output: Path, limit: int | None) -> Path:
    """The manifest of one named input: built, an existing one, or a corpus imported into
    OUT/inputs/NAME."""
    if entry.builder is not None:
        return Path(builder_function(entry.builder)(output, limit))
    if entry.manifest is not None:
        path = entry.existing_manifest()
        if path is None:
            raise ConfigError(f"input {name!r}: manifest not found: {entry.manifest}")
        return path
    from osum_data.corpora import prepare

    assert entry.prepare is not None and entry.corpus_dir is not None  # InputEntry checked it
    report = prepare(entry.prepare, Path(entry.corpus_dir).expanduser(), output / "inputs" / name)
    print(report.summary())
    return output / "inputs" / name / "cuts.jsonl.gz"


def run_input(run: str, names: list[str], manifests: dict[str, Path], output: Path) -> Path | None:
    """The manifest a run reads: one input or earlier run, several of them concatenated, or none
    (a pipeline with a source stage)."""
    if not names:
        return None
    if len(names) == 1:  # (load_plan checked that each names an input or an earlier run)
        return manifests[names[0]]
    from osum_data.manifest_io import write_jsonl

    path = output / "inputs" / f"{run}.jsonl.gz"
    write_jsonl(path, (d for name in names for d in read_jsonl(manifests[name])))
    return path


def finished_run(config: Any, input_path: Path | None, out_dir: Path) -> dict[str, Any] | None:
    """The summary of a finished run of `config` over `input_path` in `out_dir`, or None when the
    runner has work to do there. Finished: the final files are there, its summary names this
    configuration hash (which covers the side inputs' manifests and audio) and this input's digest,
    every shard's `done` file is there, and no reject is transient (those shards would be redone).
    Such a run is reused without starting Ray actors or an LLM server: the runner would skip every
    shard anyway, after seconds of start-up per run."""
    from osum_data.run.inputs import InputError, scan
    from osum_data.run.shard import shard_paths

    summary = _read_json(out_dir / "summary.json")
    if (
        not isinstance(summary, dict)
        or summary.get("transient_rejects")
        or not isinstance(summary.get("shards"), int)
    ):
        return None
    want = config.hash()
    if summary.get("config_hash") != want:
        return None
    if input_path is None:  # a source pipeline: its generated input, if made by this configuration
        source = _read_json(out_dir / "source.json")
        if not isinstance(source, dict) or source.get("config_hash") != want:
            return None
        input_path = out_dir / "source.jsonl.gz"
    if not all((out_dir / name).is_file() for name in ("cuts.jsonl.gz", "rejects.jsonl.gz")):
        return None
    for i in range(summary["shards"]):
        paths = shard_paths(out_dir, i)
        if not (paths["done"].is_file() and paths["cuts"].is_file()):
            return None
    try:
        digest = scan(Path(input_path)).digest
    except InputError:
        return None
    return summary if summary.get("input_digest") == digest else None


def _read_json(path: Path) -> Any:
    """A marker or summary written by an earlier run; None when it is missing or broken."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


@shared_embedded_servers()  # the plan's LLM runs share one embedded server (issue #15)
def run_plan(
    plan_path: str | Path,
    output: Path,
    workers: int = 2,
    limit: int | None = None,
    progress: bool = True,
    address: str | None = None,
) -> dict[str, Any]:
    """Run every section of the plan; returns the summaries by step name."""
    from osum_data.run import outdir
    from osum_data.run.config import load_pipeline
    from osum_data.run.runner import run_pipeline

    plan = load_plan(plan_path)  # the whole plan, before any work
    output = Path(output)
    started = time.monotonic()
    manifests: dict[str, Path] = {}
    results: dict[str, Any] = {}
    for name, entry in plan.inputs.items():
        t0 = time.monotonic()
        manifests[name] = build_input(name, entry, output, limit)
        print(f"[input {name}] built in {time.monotonic() - t0:.0f} s")
        results[f"input:{name}"] = {"cuts": sum(1 for _ in read_jsonl(manifests[name]))}
    planned: dict[str, str | None] = {}
    labelling: list[str] = []  # runs that label other runs' samples (no task of their own)
    measured: list[str] = []  # runs with quality stages: their measures close the plan's output
    for run in plan.runs:
        config = load_pipeline(run.pipeline, [expand_paths(x, manifests) for x in run.set])
        planned[run.name] = planned_task([s.params for s in config.stages])
        if not run.makes_samples(planned[run.name]):
            labelling.append(run.name)
        if any(spec.stage.startswith(QUALITY_STAGES_PREFIX) for spec in config.stages):
            measured.append(run.name)
        source = run_input(run.name, run.input, manifests, output)
        t0 = time.monotonic()
        with outdir.locked((output / run.name).absolute()):  # not while another run writes there
            s = finished_run(config, source, output / run.name)
        if s is None:
            s = run_pipeline(
                config, source, output / run.name, workers=workers, address=address, progress=progress
            ).summary
            print(f"[{run.name}] ran in {time.monotonic() - t0:.0f} s")
        else:
            print(f"[{run.name}] unchanged since its last run (configuration, input, side inputs): reused")
        manifests[run.name] = output / run.name / "cuts.jsonl.gz"
        results[run.name] = s
        example = write_example(manifests[run.name], output / "examples", run.name)
        if example is not None:
            print(f"[{run.name}] listen: {example}")
        print(f"[{run.name}] " + json.dumps({k: s[k] for k in ("in", "out", "rejected", "derived")}))
        print(f"[{run.name}] rejected by reason: {json.dumps(s['rejected_by_reason'])}")
        print(
            f"[{run.name}] hours out: {s['hours_out']:.4f}, by task: "
            f"{json.dumps(s['hours_by_task'], ensure_ascii=False)}"
        )
        if run.name in labelling:
            print(f"[{run.name}] labels cuts, makes no task samples: not exported, not in the mix")
        for fmt, opts in plan.export.items() if run.export and run.name not in labelling else ():
            results[f"{run.name}_export"] = _export(
                fmt, manifests[run.name], output / run.name / fmt, opts, workers, address, run.name
            )
    if plan.mix is not None:
        results["mix"] = _mix(plan, output, workers, address, progress, labelling)
        for fmt in plan.mix_export:
            results[f"mix_export:{fmt}"] = _export(
                fmt, output / "mix", output / "export" / fmt, ExportOptions(), workers, address, "mix"
            )
    table = build_table(output, planned, mix=plan.mix is not None, labelling=labelling)
    quality = {name: compare_sources(output / name) for name in measured}
    table["quality"] = {name: rows for name, rows in quality.items() if rows}
    write_table(output, table)
    results["tasks"] = table
    if plan.train is not None:
        results["train"] = _train(plan.train, output)
    if plan.report:
        from osum_data.report import build_report

        page = build_report(output)
        results["report"] = str(page)
        print(f"[report] {page}")
    _where_to_look(output, plan, results)
    print("\nTasks:\n" + format_table(table))
    for name, rows in table["quality"].items():
        print(f"\nQuality of run {name!r} (custom.quality.*; sources vs their augmented copies):")
        print(format_comparison(rows))
    missing = problems(table)
    if missing:
        print(f"\nIncomplete after {time.monotonic() - started:.0f} s: {len(missing)} problem(s) above.")
        raise PlanIncomplete(f"{output}: " + " | ".join(missing))
    print(f"\nDone in {time.monotonic() - started:.0f} s: all {len(table['tasks'])} tasks arrived.")
    return results


def _export(
    fmt: str, cuts: Path, out: Path, opts: ExportOptions, workers: int, address: str | None, label: str
) -> dict[str, Any]:
    from osum_data.export.formats import describe, export

    identity = {
        "format": fmt,
        "options": opts.model_dump(),
        "input": _content_digest(cuts),
        "code": _code_digest("export"),
    }
    marker = out / EXPORT_MARKER
    same = _read_json(marker) == identity
    summary = _read_json(out / "summary.json") if same else None
    if summary is not None:
        print(f"[{label}] {fmt} export unchanged since the last run (same cuts, options, exporter): reused")
    else:
        marker.unlink(missing_ok=True)
        t0 = time.monotonic()
        summary = export(fmt, cuts, out, workers=workers, address=address, **opts.model_dump())
        print(f"[{label}] " + describe(summary) + f" ({time.monotonic() - t0:.0f} s)")
        with atomic_path(marker) as tmp:
            tmp.write_text(json.dumps(identity) + "\n")
    return {k: summary.get(k) for k in ("exported", "rejected", "splits")}


def _content_digest(path: Path) -> str:
    """What a plan step reads from `path`, as a digest. A manifest: its cuts (decompressed: gzip
    headers carry a time) and the path, size and mtime of each audio file they name (a run redone
    with new side-input audio rewrites its augmented files under unchanged cuts). A folder (a mix):
    path, size and mtime of every file in it, as rebuilding it rewrites them."""
    from osum_data.run.params import _audio_files, audio_stat_digest

    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        files = (
            p for p in path.rglob("*") if p.is_file() and p.name != ".lock" and not p.name.startswith("plan_")
        )
        for f in sorted(files):
            st = f.stat()
            h.update(f"{f.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:16]
    with open_manifest(path, "rb") as src:
        for block in iter(lambda: src.read(1 << 20), b""):
            h.update(block)
    st = path.stat()
    h.update(audio_stat_digest(_audio_files(str(path.resolve()), st.st_mtime_ns, st.st_size)).encode())
    return h.hexdigest()[:16]


def _code_digest(package: str) -> str:
    """Digest of a subpackage's source (`export`, `mix`): a changed exporter or mixer redoes its step."""
    root = Path(__file__).resolve().parent.parent / package
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def mix_config_of(mix: dict[str, Any], runs: list[str], output: Path) -> dict[str, Any]:
    """A plan's `mix:` section as MIX.yaml content: `run:` datasets resolved to the runs' manifests,
    and, without `tasks:`, every run (of the names `runs`: those that make task samples, see
    `RunEntry.makes_samples`) as a dataset of each task it made."""
    from osum_data.tasks import registry

    reg = registry()
    mix = dict(mix)
    tasks = mix.get("tasks")
    if not tasks:
        tasks = {}
        for run in runs:
            summary = json.loads((output / run / "summary.json").read_text())
            keys = [k for k in summary.get("cuts_by_task", {}) if k in reg.all_keys]
            ids = sorted({reg.task_for_key(k)[0].id for k in keys})
            for task in ids:  # a run with samples of several tasks feeds each with its own samples
                name = run if len(ids) == 1 else f"{run}-{task}"
                entry = tasks.setdefault(task, {"weight": 1.0, "datasets": []})
                entry["datasets"].append({"run": run, "name": name})
    mix["tasks"] = resolve_runs(tasks, output)
    return mix


def _mix(
    plan: Plan, output: Path, workers: int, address: str | None, progress: bool, labelling: list[str]
) -> dict[str, Any]:
    from osum_data.mix.build import build_mix
    from osum_data.mix.config import build_mix_config

    runs = [r.name for r in plan.runs if r.name not in labelling]
    cfg = build_mix_config(mix_config_of(plan.mix or {}, runs, output), "plan: mix")
    manifests = sorted({d.path() for t in cfg.tasks.values() for d in t.datasets})
    identity = {
        "config": cfg.digest(),
        "inputs": {str(m): _content_digest(Path(m)) for m in manifests},
        "code": _code_digest("mix"),
    }
    marker = output / "mix" / MIX_MARKER
    same = _read_json(marker) == identity
    s = _read_json(output / "mix" / "summary.json") if same else None
    if s is not None:
        print("[mix] unchanged since the last run (same configuration and datasets): reused")
    else:
        marker.unlink(missing_ok=True)
        t0 = time.monotonic()
        s = build_mix(cfg, output / "mix", workers=workers, address=address, progress=progress).summary
        print(f"[mix] built in {time.monotonic() - t0:.0f} s")
        with atomic_path(marker) as tmp:
            tmp.write_text(json.dumps(identity) + "\n")
    shares = {t: f"{v['realised_share']:.3f} (target {v['target_share']:.3f})" for t, v in s["tasks"].items()}
    print(
        f"[mix] {s['out']} training cuts, {s['hours_out']:.3f} h in {output / 'mix' / 'train'}; "
        f"shares {shares}"
    )
    held = {t: (v["dev_cuts"], v["test_cuts"]) for t, v in s["tasks"].items()}
    print(f"[mix] dev/test cuts per task: {held}")
    return {k: s[k] for k in ("out", "hours_out", "cuts_by_task", "rejected")}


def _train_identity(spec: TrainEntry, output: Path) -> dict[str, Any]:
    """What a training run's checkpoints depend on: the trainer config (its bytes), the `set:`
    overrides and the mixed training set (its files' paths, sizes and mtimes: a rebuilt mix is new
    data; a reused one keeps its files untouched)."""
    return {
        "config": hashlib.sha256(Path(spec.config).read_bytes()).hexdigest()[:16],
        "set": list(spec.set),
        "mix": _content_digest(output / "mix" / "train"),
    }


def _train(spec: TrainEntry, output: Path) -> dict[str, Any]:
    """A short CPU run of the bundled trainer on the mixed Shar, through its CLI.

    A second run of the plan resumes (`--resume`) when the folder's checkpoints come from the same
    mix, trainer config and overrides: nothing is retrained, and a plan that raises `steps:`
    continues from the last checkpoint. When any of those changed, the old checkpoints belong to
    another training set: the folder (the plan's own) is cleared and training starts afresh, rather
    than continuing a model on data it was not started on."""
    train_dir = output / "train"
    identity = _train_identity(spec, output)
    marker = train_dir / TRAIN_MARKER
    resume = _read_json(marker) == identity  # (the trainer starts fresh when --resume finds no checkpoint)
    if resume:
        print(f"[train] {train_dir} was trained on this mix with this config: resuming from it")
    elif train_dir.is_dir() and any(train_dir.iterdir()):
        print(f"[train] {train_dir} was trained on another mix or config: cleared, starting afresh")
        shutil.rmtree(train_dir)
    train_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(identity) + "\n")
    cmd = [sys.executable, "-m", "training.train", "--config", spec.config]
    cmd += [
        "--train",
        str(output / "mix" / "train"),
        "--output",
        str(train_dir),
        "--max-steps",
        str(spec.steps),
    ]
    for item in spec.set:
        cmd += ["--set", item]
    if resume:
        cmd.append("--resume")
    print(f"[train] {' '.join(cmd[1:])}")
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    print(f"[train] finished in {time.monotonic() - t0:.0f} s")
    if proc.returncode != 0:
        raise OsumError(f"training failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
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


def _where_to_look(output: Path, plan: Plan, results: dict[str, Any]) -> None:
    print("\nWhere to look:")
    for run in plan.runs:
        print(f"  {output / run.name}/summary.json   the {run.name} run (cuts.jsonl.gz, rejects.jsonl.gz)")
    if (output / "examples").is_dir():
        print(f"  {output / 'examples'}/   one sample of each run to listen to (.wav) and read (.txt)")
    if "mix" in results:
        print(f"  {output / 'mix'}/summary.json   the mix: target vs realised shares, dev/test per task")
        print(f"  {output / 'mix'}/train/          the training set (Lhotse Shar, 16 kHz FLAC)")
    for key in results:
        if key.startswith("mix_export:"):
            fmt = key.split(":", 1)[1]
            print(f"  {output / 'export' / fmt}/   the mix exported as {fmt}")
    if "train" in results:
        print(f"  {output / 'train'}/train_log.jsonl   the short training run")
    if "report" in results:
        print(f"  {results['report']}   the report (open in a browser)")
