"""The plan as a typed model (`Plan`) and `load_plan`, which checks the whole plan before any work.

run-all would otherwise stop at a typo hours in, after the first runs. Every error is one line
naming the plan file, the entry (`run 'asr'`, `input 'a'`) and the key; the execution
(`osum_data.plan.run`) reads the validated model, so each default lives here only.
"""

from __future__ import annotations

import importlib
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from osum_data.yaml_config import ConfigError, explain_validation, load_yaml_file, model_keys

# Folders run-all writes next to the runs' own: a run of one of these names would be overwritten.
RESERVED_NAMES = ("inputs", "mix", "export", "examples", "report", "train")
# Input and run names become folder names (OUT/<run>, OUT/inputs/<input>): no separators, no `..`.
NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def builder_function(spec: str) -> Callable[[Path, int | None], Path]:
    """`module:function` -> the function (an input builder `(output dir, limit) -> cuts path`)."""
    module, _, name = spec.partition(":")
    found = getattr(importlib.import_module(module), name, None) if name else None
    if not callable(found):
        raise ValueError(f"builder {spec!r}: expected `module:function`, no such function")
    return found


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
            try:
                builder_function(self.builder)
            except ImportError as e:
                raise ValueError(f"builder {self.builder!r}: {e}") from None
        return self

    def existing_manifest(self) -> Path | None:
        """The manifest if it exists before the plan runs (`manifest:`, a file or a run folder)."""
        if self.manifest is None:
            return None
        p = Path(self.manifest).expanduser()
        p = p / "cuts.jsonl.gz" if p.is_dir() else p
        return p if p.is_file() else None


class RunEntry(_Entry):
    """One pipeline run. `input` absent: the plan's first input; null, "none" or []: a source
    pipeline. Once the plan is validated, `input` is the list of names the run reads."""

    name: str
    pipeline: str
    input: str | list[str] | None = None
    set: list[str] = []
    export: bool = True
    # Whether the run's kept cuts are task samples of its own: datasets of the mix, exported, counted
    # in the per-task table. Default (None): when its pipeline plans a task (a template stage). A
    # labelling run (e.g. a quality run over another run's samples) carries that run's task keys, so
    # counting it would feed the same samples twice; `samples: true` makes a run without a template
    # stage (say, a quality *filter* over another run) a dataset after all.
    samples: bool | None = None

    def makes_samples(self, task: str | None = None) -> bool:
        """Whether this run feeds the mix, the exports and the per-task table; `task`: the task its
        pipeline plans (`report.tasks.planned_task`), read from the pipeline file when not given."""
        if self.samples is not None:
            return self.samples
        if task is None:
            from osum_data.report.tasks import planned_task

            stages = (load_yaml_file(Path(self.pipeline)) or {}).get("stages") or []
            task = planned_task([s for s in stages if isinstance(s, dict)])
        return task is not None

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


class Plan(_Entry):
    description: str = ""
    inputs: dict[str, InputEntry] = {}
    runs: list[RunEntry] = Field(min_length=1)
    export: dict[str, ExportOptions] = {}
    mix: dict[str, Any] | None = None  # MIX.yaml content, checked by the mix's own validator
    mix_export: list[str] = []
    report: bool = False
    train: TrainEntry | None = None

    @field_validator("inputs", "export", mode="before")
    @classmethod
    def _empty_mapping(cls, value: Any) -> Any:
        if isinstance(value, dict):  # `osum:` with nothing under it: the defaults
            return {k: {} if v is None else v for k, v in value.items()}
        return {} if value is None else value

    @field_validator("train", mode="before")
    @classmethod
    def _train_switch(cls, value: Any) -> Any:
        return {} if value is True else None if value is False else value

    @model_validator(mode="after")
    def _resolve_inputs(self) -> Plan:
        names = list(self.inputs)
        for run in self.runs:
            run.input = run.sources(names)
        return self


def _entry_label(raw: dict[str, Any], section: str, i: Any) -> str:
    if section == "runs":
        entry = raw["runs"][i]
        name = entry.get("name") if isinstance(entry, dict) else None
        return f"run {name!r}" if isinstance(name, str) else f"run #{i + 1}"
    return f"input {i!r}"


def _validate(path: Path, raw: dict[str, Any]) -> Plan:
    """The typed plan; an error inside a run or an input names that entry before the key."""
    sections = {"runs": RunEntry, "inputs": InputEntry}
    for section, model in sections.items():
        value = raw.get(section)
        items = (
            enumerate(value) if isinstance(value, list) else value.items() if isinstance(value, dict) else ()
        )
        for i, entry in items:
            try:
                model.model_validate({} if entry is None else entry)
            except ValidationError as e:
                where = f"{path}: {_entry_label(raw, section, i)}"
                raise ConfigError(explain_validation(e, where, model_keys(model))) from None
    try:
        return Plan.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(explain_validation(e, str(path), model_keys(Plan))) from None


def load_plan(path: str | Path, check_paths: bool = True) -> Plan:
    """Read and validate the whole plan before any work: its entries (unknown keys, types, names),
    each run's input, each run's pipeline with its `set:` overrides, the exports and the mix. With
    `check_paths`, the input manifests, corpus folders and the trainer config must exist too."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"plan file not found: {path}")
    raw = load_yaml_file(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: not a plan (expected a mapping with runs:)")
    plan = _validate(path, raw)
    _check_names(path, plan)
    _check_formats(path, plan)
    if check_paths:
        _check_paths(path, plan)
    _check_runs(path, plan)
    _check_mix(path, plan)
    return plan


def _check_names(path: Path, plan: Plan) -> None:
    folder = "must be letters, digits, '_' or '-' (it names a folder)"
    for name in plan.inputs:
        if not NAME.match(name):
            raise ConfigError(f"{path}: input {name!r}: name {name!r} {folder}")
    seen: set[str] = set()
    for run in plan.runs:
        where = f"{path}: run {run.name!r}"
        if not NAME.match(run.name):
            raise ConfigError(f"{where}: name {run.name!r} {folder}")
        if run.name in seen:
            raise ConfigError(f"{path}: two runs named {run.name!r}; every run needs a distinct name")
        if run.name in RESERVED_NAMES:
            reserved = ", ".join(RESERVED_NAMES)
            raise ConfigError(
                f"{where}: the name of a folder run-all writes itself ({reserved}); rename the run"
            )
        if not Path(run.pipeline).is_file():
            raise ConfigError(f"{where}: pipeline file not found: {run.pipeline}")
        seen.add(run.name)


def _check_formats(path: Path, plan: Plan) -> None:
    from osum_data.export.formats import FORMATS

    for section, formats in (("export", list(plan.export)), ("mix_export", plan.mix_export)):
        for fmt in formats:
            if fmt not in FORMATS:
                raise ConfigError(
                    f"{path}: {section}: unknown format {fmt!r} (formats: {', '.join(FORMATS)})"
                )
    if plan.mix is None and plan.mix_export:
        raise ConfigError(f"{path}: mix_export needs a `mix:` section (there is no mix to export)")


def _check_paths(path: Path, plan: Plan) -> None:
    """What must already exist on disk: input manifests, corpus folders, the trainer config."""
    for name, entry in plan.inputs.items():
        if entry.manifest is not None and not Path(entry.manifest).expanduser().exists():
            raise ConfigError(f"{path}: input {name!r}: manifest not found: {entry.manifest}")
        if entry.corpus_dir is not None and not Path(entry.corpus_dir).expanduser().is_dir():
            raise ConfigError(f"{path}: input {name!r}: corpus_dir is not a folder: {entry.corpus_dir}")
    if plan.train is not None and not Path(plan.train.config).is_file():
        raise ConfigError(f"{path}: train: config file not found: {plan.train.config}")


def expand_paths(override: str, manifests: dict[str, Path]) -> str:
    """`key=${name}` -> `key=<manifest of that input or earlier run>` (side inputs in `set:`)."""
    for name, path in manifests.items():
        override = override.replace("${" + name + "}", str(path))
    if "${" in override:
        raise ConfigError(f"plan: {override!r} names no input or earlier run ({', '.join(manifests)})")
    return override


def _check_runs(path: Path, plan: Plan) -> None:
    """Each run's input names an input or an earlier run, and its pipeline loads with its `set:`.

    A `${name}` whose manifest the plan makes later (a built or prepared input, an earlier run)
    stands in as an empty placeholder file, accepted as a side input without reading it."""
    from osum_data.run.config import load_pipeline
    from osum_data.run.params import planned_side_inputs

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
            make(name, entry.existing_manifest())
        for run in plan.runs:
            where = f"{path}: run {run.name!r}"
            for name in run.input:
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
            if not run.input and config.source_stage is None:
                raise ConfigError(f"{where}: give `input:` (pipeline {config.name!r} has no source stage)")
            if run.input and config.source_stage is not None:
                raise ConfigError(
                    f"{where}: pipeline {config.name!r} makes its own input "
                    f"({config.source_stage.name}): set `input: null`"
                )
            make(run.name, None)


def resolve_runs(tasks: dict[str, Any], output: Path) -> dict[str, Any]:
    """`{run: NAME}` datasets of a `mix: tasks:` section -> `{name: NAME, manifest:
    OUTPUT/NAME/cuts.jsonl.gz}`; entries of another shape are left for the mix validator to name."""
    resolved = {}
    for task, entry in tasks.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("datasets", []), list):
            resolved[task] = entry
            continue
        datasets = []
        for ds in entry.get("datasets", []):
            if isinstance(ds, dict) and "run" in ds:
                ds = {
                    **{k: v for k, v in ds.items() if k != "run"},
                    "name": ds.get("name", ds["run"]),
                    "manifest": str(output / str(ds["run"]) / "cuts.jsonl.gz"),
                }
            datasets.append(ds)
        resolved[task] = {**entry, "datasets": datasets}
    return resolved


def _check_mix(path: Path, plan: Plan) -> None:
    """The `mix:` section through the mix's own validator; `run:` datasets must name a run."""
    from osum_data.mix.config import build_mix_config

    if plan.mix is None:
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
        mix["tasks"] = resolve_runs(tasks, Path("OUT"))
    elif not tasks:  # filled in from the runs' task samples once they ran: check the rest now
        from osum_data.tasks import registry

        task = next(iter(registry().tasks))
        mix["tasks"] = {task: {"datasets": [{"name": "planned", "manifest": "OUT/planned"}]}}
    build_mix_config(mix, f"{path}: mix")
