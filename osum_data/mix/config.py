"""MIX.yaml: which task manifests make the training set, with what weights, and how to split.

    name: osum-mix
    seed: 0
    unit: cuts               # cuts | hours: what weights, `total` and realised shares count
    temperature: null        # null: task weights are the shares; T: shares ~ (weight * size)^(1/T)
    total: null              # training-set size in `unit`; null: the tasks' own size after dataset weights
    audio: flac              # flac: 16 kHz FLAC inside the Shar tars | none: fields only (audio referenced)
    shard_size: 1000         # cuts per Shar shard
    shuffle_buffer: 10000    # streaming shuffle of the mixed training stream (0: off)
    splits: {dev: 0.02, test: 0.02, min_cuts: 1, max_cuts: 500, min_speakers: 3}
    tasks:
      asr:
        weight: 3
        datasets:
          - manifests/asr/cuts.jsonl.gz                       # a path (manifest or run folder) ...
          - {name: libri, manifest: runs/libri, weight: 0.5}  # ... or a mapping

Semantics (README "Mixing"): a dataset `weight` is a repeat/subsample factor inside its task (2: every
cut twice; 0.5: a fixed half; 1.5: once plus a fixed half). Task weights set each task's share of the
training set. Everything is validated here, before any manifest is read: numbers must be finite,
a key given twice in the file is an error, and so is an unknown key (the known ones are listed).

Bounds (they keep a typo from running for days or filling the disk): `total` is at most MAX_TOTAL
(1e9 cuts, or hours); a dataset weight at most MAX_DATASET_WEIGHT (1e6); and once the manifests are
read, the plan refuses a dataset repeated more than MAX_REPEAT (1000) times or a training set of more
than MAX_TOTAL cuts (plan.check_bounds), before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from osum_data.yaml_config import ConfigError, apply_overrides, explain_validation, load_yaml_file

MAX_TOTAL = 1e9  # cuts (or hours) in the training set
MAX_DATASET_WEIGHT = 1e6
MAX_REPEAT = 1000  # a dataset's realised repeat factor

Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Weight = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _At(ValueError):
    """A cross-field error that knows where it is (pydantic gives model validators no location)."""

    def __init__(self, loc: str, msg: str):
        super().__init__(msg)
        self.loc = loc


class Splits(BaseModel):
    """Per-task held-out sets, carved from each task's unique cuts before any repetition."""

    model_config = ConfigDict(extra="forbid")
    dev: Annotated[float, Field(ge=0, lt=0.5)] = 0.02
    test: Annotated[float, Field(ge=0, lt=0.5)] = 0.02
    min_cuts: Annotated[int, Field(ge=0)] = 1  # per task and split, when the task has enough cuts
    max_cuts: Annotated[int, Field(ge=0)] = 500  # per task and split
    min_speakers: Annotated[int, Field(ge=2)] = 3  # fewer known speakers: split per cut, flagged


class Dataset(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]*$")] = ""  # prefixes the dataset's cut ids
    manifest: str
    weight: Annotated[float, Field(ge=0, le=MAX_DATASET_WEIGHT, allow_inf_nan=False)] = 1.0

    def path(self) -> Path:
        """The cuts manifest: the file itself, or a run folder's cuts.jsonl.gz."""
        p = Path(self.manifest).expanduser()
        return p / "cuts.jsonl.gz" if p.is_dir() else p


class TaskEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weight: Weight = 1.0  # any finite size: only the ratios of task weights matter
    datasets: list[Dataset] = Field(min_length=1)

    @field_validator("datasets", mode="before")
    @classmethod
    def _paths(cls, value: Any) -> Any:
        if isinstance(value, str | Path):
            value = [value]
        if isinstance(value, list):
            return [{"manifest": str(v)} if isinstance(v, str | Path) else v for v in value]
        return value


class MixConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "mix"
    seed: int = 0
    unit: Literal["cuts", "hours"] = "cuts"
    temperature: Positive | None = None
    total: Annotated[float, Field(gt=0, le=MAX_TOTAL, allow_inf_nan=False)] | None = None
    audio: Literal["flac", "none"] = "flac"
    sampling_rate: Annotated[int, Field(ge=8000)] = 16000
    shard_size: Annotated[int, Field(ge=1)] = 1000
    shuffle_buffer: Annotated[int, Field(ge=0)] = 10000
    splits: Splits = Splits()
    tasks: dict[str, TaskEntry] = Field(min_length=1)

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, tasks: dict[str, TaskEntry]) -> dict[str, TaskEntry]:
        from osum_data.tasks import registry

        known = registry().tasks
        for name in tasks:
            if name not in known:
                raise ValueError(f"unknown task {name!r}; known: {', '.join(known)}")
        return tasks

    @model_validator(mode="after")
    def _names(self) -> MixConfig:
        """Default dataset names (the run folder or file stem), unique across the mix."""
        seen: dict[str, str] = {}  # name -> where
        for task, entry in self.tasks.items():
            for k, ds in enumerate(entry.datasets):
                where = f"tasks.{task}.datasets.{k}"
                base = ds.name or _default_name(Path(ds.manifest)) or task
                name, i = base, 2
                while name in seen:
                    if ds.name:
                        raise _At(
                            f"{where}.name",
                            f"two datasets named {ds.name!r} (the other is {seen[name]}); "
                            "give each its own name",
                        )
                    name, i = f"{base}-{i}", i + 1
                ds.name = name
                seen[name] = where
        if not any(e.weight > 0 for e in self.tasks.values()):
            raise _At("tasks", "every task has weight 0; give at least one a weight above 0")
        return self

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[
            :16
        ]


def _default_name(p: Path) -> str:
    """`runs/asr` and `runs/asr/cuts.jsonl.gz` -> 'asr'; `data/libri.jsonl.gz` -> 'libri'."""
    if p.name.startswith("cuts.") or not p.suffix:
        name = p.parent.name if p.name.startswith("cuts.") else p.name
    else:
        name = p.name.split(".")[0]
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


def build_mix_config(raw: Any, source: str = "<mix>") -> MixConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return MixConfig(**raw)
    except ValidationError as e:
        cause = next(
            ((x.get("ctx") or {}).get("error") for x in e.errors() if x["type"] == "value_error"), None
        )
        if isinstance(cause, _At) and not any(x["type"] == "extra_forbidden" for x in e.errors()):
            raise ConfigError(f"{source}: {cause.loc}: {cause}") from None
        raise ConfigError(explain_validation(e, source, _known_keys)) from None


def _known_keys(loc: tuple) -> list[str]:
    """The field names of the model at `loc` (a task name or list index steps into dict/list)."""
    model: Any = MixConfig
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if fields is not None and isinstance(part, str) and part in fields:
            model = fields[part].annotation
        elif get_origin(model) in (dict, list):
            model = get_args(model)[-1]
        else:
            return []
        while get_origin(model) is not None and get_origin(model) not in (dict, list):
            model = next((a for a in get_args(model) if a is not type(None)), model)  # X | None
    return list(getattr(model, "model_fields", {}))


def load_mix_config(path: str | Path, overrides: list[str] | None = None) -> MixConfig:
    """The validated MIX.yaml with `--set` overrides applied (yaml_config's one rule)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"mix file not found: {path}")
    raw = load_yaml_file(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return build_mix_config(apply_overrides(raw, overrides or []), str(path))
