"""Pipeline YAML: loading, `--set key=value` overrides and the config hash used for resume.

A pipeline file looks like:

    name: asr
    shard_size: 200          # cuts per shard (the unit of work, resume and output files)
    seed: 0                  # feeds every deterministic random choice
    imports: []              # extra modules that register stages
    stages:
      - stage: normalize_text       # a registered stage
        lowercase: false            # its parameters, inline
      - stage: filter_duration
        name: short_only            # optional: address this entry as `short_only.*` in --set
        max_duration: 20

`--set shard_size=50` sets a top-level key; `--set normalize_text.lowercase=true` sets a
parameter of the stage entry with that name. Values are parsed as YAML (numbers, `1e-4`
included, booleans, lists).
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osum_data.run.stage import get_stage, load_stage_modules
from osum_data.yaml_config import ConfigError, load_yaml, parse_override

TOP_LEVEL_DEFAULTS: dict[str, Any] = {"shard_size": 200, "seed": 0, "imports": []}


@dataclass
class StageSpec:
    name: str
    stage: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class PipelineConfig:
    name: str
    stages: list[StageSpec]
    shard_size: int = 200
    seed: int = 0
    imports: list[str] = field(default_factory=list)
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shard_size": self.shard_size,
            "seed": self.seed,
            "imports": list(self.imports),
            "stages": [{"stage": s.stage, "name": s.name, **s.params} for s in self.stages],
        }

    def hash(self) -> str:
        """Hash of everything that changes a shard's output (shard size changes the shards)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    data = copy.deepcopy(raw)
    stages = data.get("stages") or []
    for text in overrides:
        path, value = parse_override(text)
        if len(path) == 1:
            data[path[0]] = value
            continue
        target = [s for s in stages if s.get("name", s.get("stage")) == path[0]]
        if not target:
            names = [s.get("name", s.get("stage")) for s in stages]
            raise ConfigError(f"--set {text!r}: no stage named {path[0]!r} (stages: {names})")
        node = target[0]
        for part in path[1:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return data


def build_config(raw: dict[str, Any], source: str = "<dict>") -> PipelineConfig:
    unknown = set(raw) - {"name", "description", "stages", *TOP_LEVEL_DEFAULTS}
    if unknown:
        raise ConfigError(f"{source}: unknown top-level keys {sorted(unknown)}")
    if not raw.get("stages"):
        raise ConfigError(f"{source}: no stages declared")
    merged = {**TOP_LEVEL_DEFAULTS, **raw}
    load_stage_modules(merged["imports"])
    specs, names = [], set()
    for i, entry in enumerate(merged["stages"]):
        if not isinstance(entry, dict) or "stage" not in entry:
            raise ConfigError(f"{source}: stage #{i + 1} needs a 'stage:' key, got {entry!r}")
        params = {k: v for k, v in entry.items() if k not in ("stage", "name")}
        name = entry.get("name", entry["stage"])
        if name in names:
            raise ConfigError(f"{source}: two stages named {name!r}; give one a 'name:'")
        names.add(name)
        try:
            # Check the parameters in the driver without building the stage (it may load a model).
            inspect.signature(get_stage(entry["stage"])).bind(**params)
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{source}: stage {name!r}: {e}") from e
        specs.append(StageSpec(name=name, stage=entry["stage"], params=params))
    shard_size = int(merged["shard_size"])
    if shard_size < 1:
        raise ConfigError(f"{source}: shard_size must be >= 1")
    return PipelineConfig(
        name=str(merged.get("name") or Path(source).stem),
        stages=specs,
        shard_size=shard_size,
        seed=int(merged["seed"]),
        imports=list(merged["imports"]),
        source=source,
    )


def load_pipeline(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"pipeline file not found: {path}")
    raw = load_yaml(path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return build_config(apply_overrides(raw, overrides or []), str(path))
