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

The plan ends with a per-task table (osum_data.report.tasks, also `OUT/tasks.json` and the top of the
report): each task a run's pipeline makes, its samples and hours, the mix's samples and the main
reject reasons. A planned task with 0 samples, or a run whose rejects are mostly endpoint failures,
makes the plan fail (PlanIncomplete, exit 1) after the rest of it ran; "Done" means every task
arrived. A second run into the same folder reuses what is unchanged: finished shards, the LLM
cache, and the training checkpoints when the mix and the trainer config are the same (see `_train`).
Input and run names become folder names: letters, digits, `_` and `-`. `load_plan` checks the whole
plan before any work (run-all would otherwise stop at a typo hours in, after the first runs).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from osum_data.llm.server import shared_embedded_servers
from osum_data.manifest_io import atomic_path, read_jsonl
from osum_data.report.tasks import build_table, format_table, planned_task, problems, write_table
from osum_data.yaml_config import ConfigError, load_yaml_file

PLAN_KEYS = ("inputs", "runs", "export", "mix", "mix_export", "report", "train", "description")
# Folders run-all writes next to the runs' own: a run of one of these names would be overwritten.
RESERVED_NAMES = ("inputs", "mix", "export", "examples", "report", "train")
NAME = r"^[A-Za-z0-9_-]+$"
# Input and run names become folder names (OUT/<run>, OUT/inputs/<input>): no separators, no `..`.
Name = Annotated[str, Field(pattern=NAME)]


class PlanIncomplete(RuntimeError):
    """The plan ran to its end but a planned task has no samples, or a run's endpoint failed (a
    runtime error: exit 1). The message names each task and why, in one line."""


def _builder(path: str) -> Callable[[Path, int | None], Path]:
    """`module:function` -> the function (an input builder `(output dir, limit) -> cuts path`)."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputEntry(_Entry):
    """One named input: exactly one of `builder`, `manifest`, `prepare` (+ `corpus_dir`)."""

    builder: str | None = None
    manifest: str | None = None
    prepare: str | None = None
    corpus_dir: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> InputEntry:
        kinds = [k for k in ("builder", "manifest", "prepare") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                f"give exactly one of builder, manifest, prepare (got {', '.join(kinds) or 'none'})"
            )
        if (self.prepare is None) != (self.corpus_dir is None):
            raise ValueError("`prepare:` and `corpus_dir:` go together")
        if self.prepare is not None:
            from osum_data.corpora import PREPARERS

            if self.prepare not in PREPARERS:
                raise ValueError(f"unknown corpus {self.prepare!r} (known: {', '.join(sorted(PREPARERS))})")
        if self.builder is not None:
            module, _, name = self.builder.partition(":")
            try:
                found = callable(getattr(importlib.import_module(module), name, None)) and bool(name)
            except ImportError as e:
                raise ValueError(f"builder {self.builder!r}: {e}") from None
            if not found:
                raise ValueError(f"builder {self.builder!r}: expected `module:function`, no such function")
        return self


class RunEntry(_Entry):
    """One pipeline run. `input` absent: the plan's first input; null, "none" or []: a source pipeline."""

    name: Name
    pipeline: str
    input: str | list[str] | None = None
    set: list[str] = []
    export: bool = True

    def sources(self, inputs: list[str]) -> list[str]:
        """The input and earlier-run names this run reads (empty: its pipeline makes its own input)."""
        source = self.input if "input" in self.model_fields_set else (inputs[0] if inputs else None)
        if source in (None, "none"):
            return []
        return [source] if isinstance(source, str) else list(source)


class ExportOptions(_Entry):
    shards: bool = False
    shard_size: Annotated[int, Field(ge=1)] | None = None
    relative: bool = False


class TrainEntry(_Entry):
    config: str = "training/configs/tiny.yaml"
    steps: Annotated[int, Field(ge=1)] = 4
    set: list[str] = []


def _check_formats(formats: list[str]) -> None:
    from osum_data.export.formats import FORMATS

    for fmt in formats:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r} (formats: {', '.join(FORMATS)})")


class Plan(_Entry):
    description: str = ""
    inputs: dict[Name, InputEntry] = {}
    runs: list[RunEntry] = Field(min_length=1)
    export: dict[str, ExportOptions] = {}
    mix: dict[str, Any] | None = None
    mix_export: list[str] = []
    report: bool = False
    train: TrainEntry | None = None

    @field_validator("inputs", "export", mode="before")
    @classmethod
    def _empty_mapping(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("export", mode="before")
    @classmethod
    def _export_defaults(cls, value: Any) -> Any:
        if isinstance(value, dict):  # `osum:` with nothing under it: the defaults
            return {k: {} if v is None else v for k, v in value.items()}
        return value

    @field_validator("train", mode="before")
    @classmethod
    def _train_switch(cls, value: Any) -> Any:
        return {} if value is True else None if value is False else value

    @field_validator("export")
    @classmethod
    def _export_formats(cls, value: dict[str, ExportOptions]) -> dict[str, ExportOptions]:
        _check_formats(list(value))
        return value

    @field_validator("mix_export")
    @classmethod
    def _mix_export_formats(cls, value: list[str]) -> list[str]:
        _check_formats(value)
        return value


def _explain(path: Path, raw: dict[str, Any], err: dict[str, Any]) -> str:
    """One pydantic error as `PLAN: run 'asr': unknown key 'inptu'`."""
    loc = list(err["loc"])
    where = [str(loc.pop(0))] if loc else []
    if where == ["runs"] and loc and isinstance(loc[0], int):
        i = loc.pop(0)
        entry = raw["runs"][i]
        name = entry.get("name") if isinstance(entry, dict) else None
        where = [f"run {name!r}" if isinstance(name, str) else f"run #{i + 1}"]
    elif where == ["inputs"] and loc and loc[0] != "[key]":
        where = [f"input {loc.pop(0)!r}"]
    key = ".".join(str(x) for x in loc if x != "[key]")
    if err["type"] == "extra_forbidden":
        what = f"unknown key {key!r}"
    elif err["type"] == "missing":
        what = f"missing key {key!r}"
    elif err["type"] == "string_pattern_mismatch":
        what = f"name {err['input']!r} must be letters, digits, '_' or '-' (it names a folder)"
    else:
        msg = err["msg"].removeprefix("Value error, ")
        what = f"{key}: {msg}" if key else msg
    return f"{path}: " + ": ".join([*where, what])


def load_plan(path: str | Path, check_paths: bool = True) -> dict[str, Any]:
    """Read and validate the whole plan before any work: its entries (unknown keys, types, names),
    each run's input, each run's pipeline with its `set:` overrides, the exports and the mix. With
    `check_paths`, the input manifests, corpus folders and the trainer config must exist too.

    Returns the plan as a dict, each run's `input` resolved to the list of names it reads."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"plan file not found: {path}")
    raw = load_yaml_file(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: not a plan (expected a mapping with runs:)")
    unknown = sorted(set(raw) - set(PLAN_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(PLAN_KEYS)})")
    if not raw.get("runs"):
        raise ConfigError(f"{path}: no runs")
    try:
        plan = Plan(**raw)
    except ValidationError as e:
        raise ConfigError(_explain(path, raw, e.errors()[0])) from None
    _check_names(path, plan)
    if check_paths:
        _check_paths(path, plan)
    _check_runs(path, plan)
    _check_mix(path, plan)
    out = plan.model_dump()
    inputs = list(plan.inputs)
    for run, entry in zip(plan.runs, out["runs"], strict=True):
        entry["input"] = run.sources(inputs)
    return out


def _check_names(path: Path, plan: Plan) -> None:
    seen: set[str] = set()
    for run in plan.runs:
        if run.name in seen:
            raise ConfigError(f"{path}: two runs named {run.name!r}; every run needs a distinct name")
        if run.name in RESERVED_NAMES:
            raise ConfigError(
                f"{path}: run {run.name!r}: the name of a folder run-all writes itself "
                f"({', '.join(RESERVED_NAMES)}); rename the run"
            )
        if not Path(run.pipeline).is_file():
            raise ConfigError(f"{path}: run {run.name!r}: pipeline file not found: {run.pipeline}")
        seen.add(run.name)


def _check_paths(path: Path, plan: Plan) -> None:
    """What must already exist on disk: input manifests, corpus folders, the trainer config."""
    for name, entry in plan.inputs.items():
        if entry.manifest is not None and not Path(entry.manifest).expanduser().exists():
            raise ConfigError(f"{path}: input {name!r}: manifest not found: {entry.manifest}")
        if entry.corpus_dir is not None and not Path(entry.corpus_dir).expanduser().is_dir():
            raise ConfigError(f"{path}: input {name!r}: corpus_dir is not a folder: {entry.corpus_dir}")
    if plan.train is not None and not Path(plan.train.config).is_file():
        raise ConfigError(f"{path}: train: config file not found: {plan.train.config}")


def _manifest_of(entry: InputEntry) -> Path | None:
    """An input's manifest if it exists before the plan runs (`manifest:`), else None."""
    if entry.manifest is None:
        return None
    p = Path(entry.manifest).expanduser()
    p = p / "cuts.jsonl.gz" if p.is_dir() else p
    return p if p.is_file() else None


def _check_runs(path: Path, plan: Plan) -> None:
    """Each run's input names an input or an earlier run, and its pipeline loads with its `set:`.

    A `${name}` whose manifest the plan makes later (a built or prepared input, an earlier run)
    stands in as an empty placeholder file, accepted as a side input without reading it."""
    from osum_data.run.config import load_pipeline
    from osum_data.run.params import planned_side_inputs

    inputs = list(plan.inputs)
    with tempfile.TemporaryDirectory(prefix="osum-plan-") as tmp:
        known: dict[str, Path] = {}
        placeholders: dict[Path, str] = {}

        def make(name: str, existing: Path | None) -> None:
            if existing is None:
                existing = Path(tmp) / f"{name}.jsonl.gz"
                existing.touch()
                placeholders[existing] = name
            known[name] = existing

        for name, entry in plan.inputs.items():
            make(name, _manifest_of(entry))
        for run in plan.runs:
            where = f"{path}: run {run.name!r}"
            sources = run.sources(inputs)
            for name in sources:
                if name not in known:
                    have = ", ".join(known) or "none"
                    raise ConfigError(
                        f"{where}: input {name!r} is neither an input nor an earlier run (those are: {have})"
                    )
            try:
                overrides = [expand_paths(x, known) for x in run.set]
            except ConfigError as e:
                raise ConfigError(f"{where}: set: {str(e).removeprefix('plan: ')}") from None
            try:
                with planned_side_inputs(placeholders):
                    config = load_pipeline(run.pipeline, overrides)
            except ConfigError as e:
                message = str(e)
                for p, name in placeholders.items():
                    message = message.replace(str(p), "${" + name + "}")
                raise ConfigError(f"{where}: {message}") from None
            if not sources and config.source_stage is None:
                raise ConfigError(f"{where}: give `input:` (pipeline {config.name!r} has no source stage)")
            if sources and config.source_stage is not None:
                raise ConfigError(
                    f"{where}: pipeline {config.name!r} makes its own input "
                    f"({config.source_stage.name}): set `input: null`"
                )
            make(run.name, None)


def _check_mix(path: Path, plan: Plan) -> None:
    """The `mix:` section through the mix's own validator; `run:` datasets must name a run."""
    from osum_data.mix.config import build_mix_config

    if plan.mix is None:
        if plan.mix_export:
            raise ConfigError(f"{path}: mix_export needs a `mix:` section (there is no mix to export)")
        return
    runs = [r.name for r in plan.runs]
    mix = dict(plan.mix)
    tasks = mix.get("tasks")
    if tasks and isinstance(tasks, dict):
        for task, entry in tasks.items():
            datasets = entry.get("datasets") if isinstance(entry, dict) else None
            for i, ds in enumerate(datasets if isinstance(datasets, list) else []):
                if isinstance(ds, dict) and "run" in ds and ds["run"] not in runs:
                    raise ConfigError(
                        f"{path}: mix: tasks.{task}.datasets.{i}.run: no run named {ds['run']!r} "
                        f"(runs: {', '.join(runs)})"
                    )
        mix["tasks"] = _resolve_runs(tasks, Path("OUT"))
    elif not tasks:  # filled in from the runs' task samples once they ran: check the rest now
        from osum_data.tasks import registry

        task = next(iter(registry().tasks))
        mix["tasks"] = {task: {"datasets": [{"name": "planned", "manifest": "OUT/planned"}]}}
    build_mix_config(mix, f"{path}: mix")


def build_input(name: str, entry: dict[str, Any], output: Path, limit: int | None) -> Path:
    if entry.get("builder") is not None:
        return Path(_builder(entry["builder"])(output, limit))
    if entry.get("manifest") is not None:
        path = Path(entry["manifest"]).expanduser()
        if not path.exists():
            raise ConfigError(f"input {name!r}: manifest not found: {path}")
        return path / "cuts.jsonl.gz" if path.is_dir() else path
    if entry.get("prepare") is not None:
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


def run_input(run: str, names: list[str], manifests: dict[str, Path], output: Path) -> Path | None:
    """The manifest a run reads: one input or earlier run, several of them concatenated, or none
    (a pipeline with a source stage)."""
    if not names:
        return None
    for name in names:
        if name not in manifests:
            raise ConfigError(f"run {run!r}: input {name!r} is neither an input nor an earlier run")
    if len(names) == 1:
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

    try:
        summary = json.loads((out_dir / "summary.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
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
        try:
            if json.loads((out_dir / "source.json").read_text()).get("config_hash") != want:
                return None
        except (FileNotFoundError, json.JSONDecodeError):
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
    for name, entry in (plan.get("inputs") or {}).items():
        t0 = time.monotonic()
        manifests[name] = build_input(name, entry, output, limit)
        print(f"[input {name}] built in {time.monotonic() - t0:.0f} s")
        results[f"input:{name}"] = {"cuts": sum(1 for _ in read_jsonl(manifests[name]))}
    planned: dict[str, str | None] = {}
    for run in plan["runs"]:
        overrides = [expand_paths(x, manifests) for x in run["set"]]
        config = load_pipeline(run["pipeline"], overrides)
        planned[run["name"]] = planned_task([s.params for s in config.stages])
        source = run_input(run["name"], run["input"], manifests, output)
        t0 = time.monotonic()
        with outdir.locked((output / run["name"]).absolute()):  # not while another run writes there
            s = finished_run(config, source, output / run["name"])
        if s is None:
            s = run_pipeline(
                config, source, output / run["name"], workers=workers, address=address, progress=progress
            ).summary
            print(f"[{run['name']}] ran in {time.monotonic() - t0:.0f} s")
        else:
            print(f"[{run['name']}] unchanged since its last run (configuration, input, side inputs): reused")
        manifests[run["name"]] = output / run["name"] / "cuts.jsonl.gz"
        results[run["name"]] = s
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
    table = build_table(output, planned, mix=plan.get("mix") is not None)
    write_table(output, table)
    results["tasks"] = table
    if plan.get("train"):
        results["train"] = _train(plan["train"], output)
    if plan.get("report"):
        from osum_data.report import build_report

        page = build_report(output)
        results["report"] = str(page)
        print(f"[report] {page}")
    _where_to_look(output, plan, results)
    print("\nTasks:\n" + format_table(table))
    missing = problems(table)
    if missing:
        print(f"\nIncomplete after {time.monotonic() - started:.0f} s: {len(missing)} problem(s) above.")
        raise PlanIncomplete(f"{output}: " + " | ".join(missing))
    print(f"\nDone in {time.monotonic() - started:.0f} s: all {len(table['tasks'])} tasks arrived.")
    return results


def _export(
    fmt: str, cuts: Path, out: Path, opts: dict[str, Any], workers: int, address: str | None, label: str
) -> dict[str, Any]:
    from osum_data.export.formats import describe, export

    opts = dict(opts or {})
    identity = {
        "format": fmt,
        "options": dict(opts),
        "input": _content_digest(cuts),
        "code": _code_digest("export"),
    }
    marker = out / EXPORT_MARKER
    try:
        previous = json.loads(marker.read_text())
        summary = json.loads((out / "summary.json").read_text()) if previous == identity else None
    except (FileNotFoundError, json.JSONDecodeError):
        summary = None
    if summary is not None:
        print(f"[{label}] {fmt} export unchanged since the last run (same cuts, options, exporter): reused")
    else:
        marker.unlink(missing_ok=True)
        t0 = time.monotonic()
        summary = export(
            fmt, cuts, out, shards=bool(opts.pop("shards", False)), workers=workers, address=address, **opts
        )
        print(f"[{label}] " + describe(summary) + f" ({time.monotonic() - t0:.0f} s)")
        with atomic_path(marker) as tmp:
            tmp.write_text(json.dumps(identity) + "\n")
    return {k: summary.get(k) for k in ("exported", "rejected", "splits")}


EXPORT_MARKER = "plan_export.json"
MIX_MARKER = "plan_mix.json"


def _content_digest(path: Path) -> str:
    """What a plan step reads from `path`, as a digest. A manifest: its cuts (decompressed: gzip
    headers carry a time) and the path, size and mtime of each audio file they name (a run redone
    with new side-input audio rewrites its augmented files under unchanged cuts). A folder (a mix):
    path, size and mtime of every file in it, as rebuilding it rewrites them."""
    from osum_data.run.params import audio_stat_digest

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
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as src:
        for block in iter(lambda: src.read(1 << 20), b""):
            h.update(block)
    h.update(audio_stat_digest(_audio_files_of(path)).encode())
    return h.hexdigest()[:16]


def _audio_files_of(path: Path) -> tuple[str, ...]:
    from osum_data.run.params import _audio_files

    st = path.stat()
    return _audio_files(str(path.resolve()), st.st_mtime_ns, st.st_size)


def _code_digest(package: str) -> str:
    """Digest of a subpackage's source (`export`, `mix`): a changed exporter or mixer redoes its step."""
    root = Path(__file__).resolve().parent / package
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


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
    mix["tasks"] = _resolve_runs(tasks, output)
    return mix


def _resolve_runs(tasks: dict[str, Any], output: Path) -> dict[str, Any]:
    """`{run: NAME}` datasets -> `{name: NAME, manifest: OUTPUT/NAME/cuts.jsonl.gz}`; entries of
    another shape are left for the mix validator to name."""
    resolved = {}
    for task, entry in tasks.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("datasets", []), list):
            resolved[task] = entry
            continue
        entry = dict(entry)
        datasets = []
        for ds in entry.get("datasets", []):
            if isinstance(ds, dict) and "run" in ds:
                ds = {
                    **{k: v for k, v in ds.items() if k != "run"},
                    "name": ds.get("name", ds["run"]),
                    "manifest": str(output / str(ds["run"]) / "cuts.jsonl.gz"),
                }
            datasets.append(ds)
        entry["datasets"] = datasets
        resolved[task] = entry
    return resolved


def _mix(
    plan: dict[str, Any], output: Path, workers: int, address: str | None, progress: bool
) -> dict[str, Any]:
    from osum_data.mix.build import build_mix
    from osum_data.mix.config import build_mix_config

    cfg = build_mix_config(mix_config_of(plan, output), "plan: mix")
    manifests = sorted({d.path() for t in cfg.tasks.values() for d in t.datasets})
    identity = {
        "config": cfg.digest(),
        "inputs": {str(m): _content_digest(Path(m)) for m in manifests},
        "code": _code_digest("mix"),
    }
    marker = output / "mix" / MIX_MARKER
    try:
        same = json.loads(marker.read_text()) == identity
        s = json.loads((output / "mix" / "summary.json").read_text()) if same else None
    except (FileNotFoundError, json.JSONDecodeError):
        s = None
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


TRAIN_MARKER = "plan_train.json"


def _train_identity(spec: dict[str, Any], output: Path) -> dict[str, Any]:
    """What a training run's checkpoints depend on: the trainer config (its bytes), the `set:`
    overrides and the mixed training set (its files' paths, sizes and mtimes: a rebuilt mix is new
    data; a reused one keeps its files untouched)."""
    config = Path(str(spec.get("config", "training/configs/tiny.yaml")))
    return {
        "config": hashlib.sha256(config.read_bytes()).hexdigest()[:16],
        "set": [str(x) for x in spec.get("set", []) or []],
        "mix": _content_digest(output / "mix" / "train"),
    }


def _train(spec: dict[str, Any], output: Path) -> dict[str, Any]:
    """A short CPU run of the bundled trainer on the mixed Shar, through its CLI.

    A second run of the plan resumes (`--resume`) when the folder's checkpoints come from the same
    mix, trainer config and overrides: nothing is retrained, and a plan that raises `steps:`
    continues from the last checkpoint. When any of those changed, the old checkpoints belong to
    another training set: the folder (the plan's own) is cleared and training starts afresh, rather
    than continuing a model on data it was not started on."""
    train_dir = output / "train"
    identity = _train_identity(spec, output)
    marker = train_dir / TRAIN_MARKER
    try:
        previous = json.loads(marker.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        previous = None
    resume = previous == identity  # (the trainer starts fresh when --resume finds no checkpoint)
    if resume:
        print(f"[train] {train_dir} was trained on this mix with this config: resuming from it")
    elif train_dir.is_dir() and any(train_dir.iterdir()):
        print(f"[train] {train_dir} was trained on another mix or config: cleared, starting afresh")
        shutil.rmtree(train_dir)
    train_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(identity) + "\n")
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
    if resume:
        cmd.append("--resume")
    print(f"[train] {' '.join(cmd[1:])}")
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    print(f"[train] finished in {time.monotonic() - t0:.0f} s")
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
