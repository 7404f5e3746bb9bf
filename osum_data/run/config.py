"""Pipeline YAML: loading, `--set key=value` overrides, validation and the config hash used for resume.

A pipeline file looks like:

    name: asr
    shard_size: 200          # cuts per shard (the unit of work, resume and output files)
    seed: 0                  # feeds every deterministic random choice (StageContext.seed)
    imports: []              # modules of your own stages (built-in ones need none)
    stages:
      - stage: normalize_text       # a registered stage
        lowercase: false            # its parameters, inline
      - stage: filter_duration
        name: short_only            # optional: address this entry as `short_only.*` in --set
        max_duration: 20
        resources: {num_cpus: 1}    # optional: override what the stage declares

`--set shard_size=50` sets a top-level key; `--set normalize_text.lowercase=true` sets a
parameter of the stage entry with that name. Values are parsed as YAML (numbers, `1e-4`
included, booleans, lists). Everything is validated here, in the driver, before any work: unknown
keys, wrong types and disallowed values are a ConfigError naming the file, the stage and the key.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from osum_data.run.params import ParamError, side_inputs, validate_params
from osum_data.run.stage import RESERVED, Resources, UnknownStage, get_stage, load_stage_modules
from osum_data.sources import SourcePolicy, SourcePolicyError, current_policy, policy_scope
from osum_data.yaml_config import ConfigError, apply_overrides, brief, explain_validation, load_yaml_file

STAGE_KEYS = RESERVED


class _TopLevel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = ""
    description: str = ""
    shard_size: int = Field(200, ge=1)
    seed: int = 0
    imports: list[str] = []
    llm: dict[str, Any] | None = None
    sources: dict[str, Any] | None = None  # which audio sources cuts may use (osum_data/sources.py)
    stages: list[Any] = Field(min_length=1)


class _ResourceOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_cpus: float | None = Field(None, ge=0)
    num_gpus: float | None = Field(None, ge=0)
    concurrency: int | None = Field(None, ge=1)


@dataclass
class StageSpec:
    name: str
    stage: str
    params: dict[str, Any] = field(default_factory=dict)  # canonical (JSON) values
    resources: Resources = field(default_factory=Resources)
    resource_override: dict[str, Any] = field(default_factory=dict)
    kind: str = "per_cut"
    version: int = 1
    side_input_digests: dict[str, str] = field(default_factory=dict)

    def typed_params(self) -> dict[str, Any]:
        """The parameters as the stage receives them (tuples, SideInputs, ...)."""
        return validate_params(get_stage(self.stage), self.params)[0]


@dataclass
class PipelineConfig:
    name: str
    stages: list[StageSpec]
    shard_size: int = 200
    seed: int = 0
    imports: list[str] = field(default_factory=list)
    source: str = ""
    llm: dict[str, Any] = field(default_factory=dict)  # the `llm:` section, validated, as given
    # Audio sources the input cuts may use: the YAML's `sources:`, else the CLI's opt-in flags. Always
    # in to_dict, so remote workers apply the driver's policy, not their own environment's.
    sources: SourcePolicy = field(default_factory=SourcePolicy)

    @property
    def uses_llm(self) -> bool:
        return any(get_stage(s.stage).uses_llm for s in self.stages)

    def llm_settings(self):
        """The validated LLMSettings of the `llm:` section (defaults where it is silent)."""
        from osum_data.llm.settings import load_llm_settings

        return load_llm_settings(self.llm, self.source)

    @property
    def source_stage(self) -> StageSpec | None:
        """The generator the pipeline starts from, if it makes its own input."""
        return self.stages[0] if self.stages and self.stages[0].kind == "source" else None

    @property
    def chain(self) -> list[StageSpec]:
        """The stages that run on the workers (everything but a source)."""
        return self.stages[1:] if self.source_stage else self.stages

    def to_dict(self) -> dict[str, Any]:
        def entry(s: StageSpec) -> dict[str, Any]:
            out = {"stage": s.stage, "name": s.name, **s.params}
            if s.resource_override:
                out["resources"] = dict(s.resource_override)
            return out

        out = {
            "name": self.name,
            "shard_size": self.shard_size,
            "seed": self.seed,
            "imports": list(self.imports),
            "stages": [entry(s) for s in self.stages],
        }
        if self.llm:
            out["llm"] = copy.deepcopy(self.llm)
        out["sources"] = self.sources.to_dict()
        return out

    def hash_inputs(self) -> dict[str, Any]:
        """Everything that changes a shard's output besides its input lines: the configuration,
        each stage's code version, the content of side inputs, and the label vocabularies, prompt
        pools and corpus maps (all package YAML). Resources are left out: they change where a
        stage runs, not what it writes."""
        cfg = self.to_dict()
        for s in cfg["stages"]:
            s.pop("resources", None)
        cfg.pop("llm", None)
        if self.sources.is_default:  # (hashes of runs from before the policy existed stay valid)
            cfg.pop("sources", None)
        llm = {}
        if self.uses_llm:
            # What an answer depends on (the cache keys on the same): the model and sampling. Not the
            # URL, concurrency or timeouts, which change where and how fast, not what.
            settings = self.llm_settings()
            llm = {k: getattr(settings, k) for k in ("temperature", "top_p", "max_tokens", "seed")}
            llm["model"] = settings.env_model()
            llm["embedded_model"] = settings.embedded.model_path if not settings.env_base_url() else None
        return {
            "config": cfg,
            "versions": {s.name: s.version for s in self.stages},
            "side_inputs": {f"{s.name}.{k}": d for s in self.stages for k, d in s.side_input_digests.items()},
            "package_data": package_data_digest(),
            **({"llm": llm} if llm else {}),
        }

    def hash(self) -> str:
        blob = json.dumps(self.hash_inputs(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


PACKAGE_ROOT = Path(__file__).resolve().parents[1]


@cache
def package_data_digest(root: Path = PACKAGE_ROOT) -> str:
    """Digest of every YAML file shipped in the package (vocabularies, prompts, corpus maps,
    text rules): editing any of them changes what templating and labelling write."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.yaml")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _locate(data: dict[str, Any], path: list[str], text: str) -> tuple[dict[str, Any], list[str]]:
    """Where `--set a.b=v` lands in a pipeline: a top-level key, the `llm:`/`sources:` sections, or
    (`stage_name.param`) the stage entry of that name."""
    if len(path) == 1 or path[0] in ("llm", "sources"):
        return data, path
    stages = [s for s in data.get("stages") or [] if isinstance(s, dict)]
    target = [s for s in stages if s.get("name", s.get("stage")) == path[0]]
    if not target:
        names = ", ".join(str(s.get("name", s.get("stage"))) for s in stages)
        raise ConfigError(f"--set {text!r}: no stage named {path[0]!r} (stages: {names})")
    return target[0], path[1:]


def _top_level(raw: dict[str, Any], source: str) -> _TopLevel:
    if not raw.get("stages"):
        raise ConfigError(f"{source}: no stages declared")
    try:
        return _TopLevel(**raw)
    except ValidationError as e:
        raise ConfigError(explain_validation(e, source, lambda _: list(_TopLevel.model_fields))) from None


def _stage_spec(entry: Any, index: int, source: str) -> StageSpec:
    if not isinstance(entry, dict) or "stage" not in entry:
        raise ConfigError(f"{source}: stage #{index + 1} needs a 'stage:' key, got {brief(entry)}")
    name = entry.get("name", entry["stage"])
    name = name if isinstance(name, str) else brief(name)
    try:
        defn = get_stage(entry["stage"])
    except (UnknownStage, ImportError) as e:  # ImportError: its module (or a package it needs)
        raise ConfigError(f"{source}: stage #{index + 1}: {e}") from None
    params = {k: v for k, v in entry.items() if k not in STAGE_KEYS}
    try:
        typed, canonical = validate_params(defn, params, f"{source}: stage {name!r}")
    except ParamError as e:
        raise ConfigError(str(e)) from None
    override = entry.get("resources") or {}
    try:
        checked = _ResourceOverride(**override) if isinstance(override, dict) else None
    except ValidationError as e:
        where, fields = f"{source}: stage {name!r}: resources", list(_ResourceOverride.model_fields)
        raise ConfigError(explain_validation(e, where, lambda _: fields)) from None
    if checked is None:
        raise ConfigError(f"{source}: stage {name!r}: resources must be a mapping, got {brief(override)}")
    override = checked.model_dump(exclude_none=True)
    return StageSpec(
        name=name,
        stage=defn.name,
        params=canonical,
        resources=defn.resources.merged(override),
        resource_override=override,
        kind=defn.kind,
        version=defn.version,
        side_input_digests={k: v.digest for k, v in side_inputs(typed).items()},
    )


def build_config(raw: dict[str, Any], source: str = "<dict>") -> PipelineConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    top = _top_level(raw, source)
    try:
        load_stage_modules(top.imports)
    except ImportError as e:
        raise ConfigError(f"{source}: imports: {e}") from None
    try:
        policy = SourcePolicy.from_dict(top.sources) if top.sources is not None else current_policy()
    except SourcePolicyError as e:
        raise ConfigError(f"{source}: {e}") from None
    specs: list[StageSpec] = []
    for i, entry in enumerate(top.stages):
        with policy_scope(policy):  # side-input manifests are checked against it
            spec = _stage_spec(entry, i, source)
        if spec.name in {s.name for s in specs}:
            raise ConfigError(f"{source}: two stages named {spec.name!r}; give one a 'name:'")
        if spec.kind == "source" and i > 0:
            raise ConfigError(f"{source}: source stage {spec.name!r} must be the first stage")
        specs.append(spec)
    if specs[0].kind == "source" and len(specs) == 1:
        raise ConfigError(f"{source}: a pipeline needs stages after its source {specs[0].name!r}")
    config = PipelineConfig(
        name=top.name or Path(source).stem,
        stages=specs,
        shard_size=top.shard_size,
        seed=top.seed,
        imports=list(top.imports),
        source=source,
        llm=dict(top.llm or {}),
        sources=policy,
    )
    if config.llm or config.uses_llm:
        config.llm_settings()  # validate the section before any work
    return config


def load_pipeline(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "not found"
        raise ConfigError(f"pipeline file {what}: {path}")
    raw = load_yaml_file(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):  # a JSONL line, a list, a bare string: some other kind of file
        raise ConfigError(f"{path}: not a pipeline (expected a mapping with stages:)")
    return build_config(apply_overrides(raw, overrides or [], locate=_locate), str(path))
