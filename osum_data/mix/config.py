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
training set. Everything is validated here, before any manifest is read.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from osum_data.yaml_config import ConfigError, load_yaml, parse_override

Positive = Annotated[float, Field(gt=0)]


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
    weight: Annotated[float, Field(ge=0)] = 1.0

    def path(self) -> Path:
        """The cuts manifest: the file itself, or a run folder's cuts.jsonl.gz."""
        p = Path(self.manifest).expanduser()
        return p / "cuts.jsonl.gz" if p.is_dir() else p


class TaskEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weight: Annotated[float, Field(ge=0)] = 1.0
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
    total: Positive | None = None
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
        seen: set[str] = set()
        for task, entry in self.tasks.items():
            for ds in entry.datasets:
                base = ds.name or _default_name(Path(ds.manifest)) or task
                name, i = base, 2
                while name in seen:
                    if ds.name:
                        raise ValueError(f"two datasets named {ds.name!r}")
                    name, i = f"{base}-{i}", i + 1
                ds.name = name
                seen.add(name)
        if not any(e.weight > 0 for e in self.tasks.values()):
            raise ValueError("every task has weight 0")
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


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`--set seed=3`, `--set splits.dev=0.05`, `--set tasks.asr.weight=2`."""
    data = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: {part!r} is not a mapping")
        node[path[-1]] = value
    return data


def build_mix_config(raw: Any, source: str = "<mix>") -> MixConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return MixConfig(**raw)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(x) for x in err["loc"]) or "?"
        if err["type"] == "extra_forbidden":
            raise ConfigError(f"{source}: unknown key {key!r}") from None
        if err["type"] == "missing":
            raise ConfigError(f"{source}: missing key {key!r}") from None
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{source}: {key}: {msg}") from None


def load_mix_config(path: str | Path, overrides: list[str] | None = None) -> MixConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"mix file not found: {path}")
    try:
        raw = load_yaml(path.read_text(encoding="utf-8")) or {}
    except Exception as e:  # yaml.YAMLError, UnicodeDecodeError
        raise ConfigError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    return build_mix_config(apply_overrides(raw, overrides or []), str(path))
