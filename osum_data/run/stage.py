"""The stage contract, version 2 (DESIGN section 5).

A stage is a named, registered callable over a batch of cuts that returns the cuts it keeps and the
cuts it rejects, each with a reason. Three shapes, one registry:

- per-cut functions, `@per_cut_stage("name")` over `def f(cut, [ctx,] **params) -> Cut | list[Cut]`;
  raise `Reject(code, detail)` to drop a cut. Most stages are this.
- classes, `@register_stage("name")` over a class whose `__init__(**params)` runs once per Ray
  worker (load a model there) and whose `__call__(cuts, ctx) -> StageResult` handles a batch.
- source stages, `@source_stage("name")` over `def g(ctx, **params) -> Iterable[Cut]`: a pipeline
  may start from one (generated prompts, personas) instead of `--input`.

Parameters are typed: the annotations of the function (or of `__init__`) are checked by pydantic
before any work starts, so `max_duration: abc` or `channels: downmx` fail at load time, naming the
stage and the key. A stage declares the resources it needs (`num_cpus`, `num_gpus`, `concurrency`:
the actor count of its pool) and a `version` that is part of the config hash: bump it when a change
of code changes results, and every finished shard is re-run.

Each call gets a `StageContext`: the pipeline seed, the shard index, and a per-shard directory for
files the stage writes (audio, caches), inside the shard's atomic protocol.

Stages are found through the entry point group `osum_data.stages` (entry name = stage name, value =
the module that registers it): ours are declared in pyproject.toml, and a user package adds stages
the same way without editing ours; a stage's module is imported when a pipeline first names it. A
pipeline's `imports:` list names the modules of its own stages (outside any package).
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import inspect
import tomllib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal

from lhotse.cut import Cut

from osum_data.errors import UsageError
from osum_data.rejects import FatalStageError, Reject
from osum_data.seeded import unit_draw

ENTRY_POINT_GROUP = "osum_data.stages"


@dataclass
class StageResult:
    kept: list[Cut] = field(default_factory=list)
    rejected: list[tuple[Cut, Reject]] = field(default_factory=list)
    # Numbers a stage wants summed into its row of summary.json (LLM tokens, requests, TTS seconds);
    # nested dicts of numbers are summed key by key.
    counters: dict[str, Any] = field(default_factory=dict)


def add_counters(total: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    """Sum `more` into `total` (numbers, and dicts of numbers, key by key)."""
    for k, v in more.items():
        if isinstance(v, dict):
            add_counters(total.setdefault(k, {}), v)
        elif isinstance(v, int | float) and not isinstance(v, bool):
            total[k] = total.get(k, 0) + v
    return total


@dataclass(frozen=True)
class Resources:
    """What one actor of a stage's pool needs. `concurrency` is the pool size (None: one actor per
    worker). Consecutive stages with equal resources share one pool."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    concurrency: int | None = None

    def merged(self, override: dict[str, Any] | None) -> Resources:
        return Resources(**{**self.__dict__, **(override or {})})


@dataclass(frozen=True)
class StageContext:
    """What a stage knows about where it runs. `files_dir` is this shard's directory for files the
    stage writes; it is emptied when the shard (re)starts and complete once the shard's `done`
    marker exists, so a killed or re-run shard never leaves half-written files behind."""

    seed: int
    shard_index: int
    run_dir: Path
    stage: str

    @property
    def files_dir(self) -> Path:
        path = shard_files_dir(self.run_dir, self.shard_index) / self.stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    def draw(self, salt: str, cut_id: str) -> float:
        """A number in [0, 1) fixed by (pipeline seed, salt, cut id): deterministic randomness that
        does not depend on shard size, worker count or order."""
        return unit_draw(self.seed, salt, cut_id)


def shard_files_dir(run_dir: Path, index: int) -> Path:
    return Path(run_dir) / "files" / f"{index:06d}"




BatchFn = Callable[[list[Cut], StageContext], StageResult]


@dataclass(frozen=True)
class StageDef:
    """A registered stage: how to build it, what its parameters are, what it needs."""

    name: str
    kind: Literal["per_cut", "batch", "source"]
    factory: Callable[..., Any]  # (**params) -> BatchFn, or the source generator itself
    signature: inspect.Signature  # the parameters a pipeline entry may set
    hints_of: Callable[..., Any]  # the object whose type hints annotate `signature`
    resources: Resources = Resources()
    version: int = 1
    check: Callable[[dict[str, Any]], None] | None = None  # cross-parameter rules (min < max)
    doc: str = ""
    uses_llm: bool = False  # takes `llm`: the runner resolves an endpoint (or starts the local one)


_REGISTRY: dict[str, StageDef] = {}


def _add(defn: StageDef) -> None:
    if defn.name in _REGISTRY:
        raise ValueError(f"stage {defn.name!r} registered twice")
    _REGISTRY[defn.name] = defn


# Arguments the runner supplies, never the pipeline YAML: the stage context, and `llm` (the resolved
# LLM endpoint settings) for stages that talk to an LLM.
INJECTED = ("ctx", "llm")
# Keys of a pipeline's stage entry that are not parameters: a stage may not take these names.
RESERVED = ("stage", "name", "resources")


def _params_only(sig: inspect.Signature, drop: int) -> inspect.Signature:
    params = [p for p in list(sig.parameters.values())[drop:] if p.name not in INJECTED]
    return sig.replace(parameters=params)


def _define(
    name: str, kind: str, factory: Callable[..., Any], target: Callable[..., Any], skip: int, **opts: Any
) -> None:
    """Register `factory` under `name`; its parameters are `target`'s, past the first `skip` and
    the injected ones."""
    full = inspect.signature(target)
    clash = [p for p in RESERVED if p in full.parameters]
    if clash:
        raise ValueError(
            f"stage {name!r}: parameter {clash[0]!r} clashes with the pipeline entry key of that "
            "name; rename it"
        )
    resources = Resources(opts.pop("num_cpus", 1.0), opts.pop("num_gpus", 0.0), opts.pop("concurrency", None))
    _add(
        StageDef(
            name=name,
            kind=kind,
            factory=factory,
            signature=_params_only(full, skip),
            hints_of=target,
            resources=resources,
            doc=inspect.getdoc(target if kind != "batch" else factory) or "",
            uses_llm="llm" in full.parameters,
            **opts,
        )
    )


def register_stage(
    name: str,
    *,
    version: int = 1,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    concurrency: int | None = None,
    check: Callable[[dict[str, Any]], None] | None = None,
):
    """Register a batch stage: a class (built once per worker with the parameters, then called as
    `obj(cuts, ctx)`) or any factory `(**params) -> callable(cuts, ctx)`."""

    def deco(factory):
        is_class = inspect.isclass(factory)
        target = factory.__init__ if is_class else factory
        _define(
            name, "batch", factory, target, 1 if is_class else 0,
            version=version, num_cpus=num_cpus, num_gpus=num_gpus, concurrency=concurrency, check=check,
        )  # fmt: skip
        return factory

    return deco


# Errors of the machine, not of a cut: they stop the run (rejecting every cut would hide them).
FATAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def is_fatal(e: BaseException) -> bool:
    return isinstance(e, FatalStageError) or (isinstance(e, OSError) and e.errno in FATAL_ERRNOS)


@contextlib.contextmanager
def rejecting(result: StageResult, cut: Cut) -> Iterator[None]:
    """In a batch stage's loop over cuts: a Reject, or any other error, raised inside the block
    rejects `cut` into `result` (with the cause) instead of failing the batch; a full disk still
    stops the run. `with rejecting(result, cut): result.kept.append(work(cut))`."""
    try:
        yield
    except Reject as r:
        result.rejected.append((cut, r))
    except Exception as e:  # a bug or an unexpected input: this cut only, with the cause
        if is_fatal(e):
            raise
        result.rejected.append((cut, error_reject(e)))


def apply_per_cut(
    fn: Callable[..., Any], cuts: list[Cut], ctx: StageContext | None, params: dict
) -> StageResult:
    """Map `fn` over the cuts; a Reject or any other exception rejects only that cut."""
    result = StageResult()
    extra = {"ctx": ctx} if ctx is not None else {}
    for cut in cuts:
        with rejecting(result, cut):
            out = fn(cut, **extra, **params)
            result.kept.extend(out if isinstance(out, list) else [out])
    return result


def error_reject(e: BaseException) -> Reject:
    """A Reject (code `error`) naming the exception and the source line that raised it."""
    import traceback

    frames = traceback.extract_tb(e.__traceback__)
    where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    message = " ".join(str(e).split())[:300]
    return Reject("error", f"{type(e).__name__}: {message}{where}")


def per_cut_stage(
    name: str,
    *,
    version: int = 1,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    concurrency: int | None = None,
    check: Callable[[dict[str, Any]], None] | None = None,
):
    """Register `fn(cut, [ctx,] **params)` as a stage that maps each cut independently."""

    def deco(fn):
        wants_ctx = "ctx" in inspect.signature(fn).parameters

        def factory(**params: Any) -> BatchFn:
            return lambda cuts, ctx: apply_per_cut(fn, cuts, ctx if wants_ctx else None, params)

        _define(
            name, "per_cut", factory, fn, 1,
            version=version, num_cpus=num_cpus, num_gpus=num_gpus, concurrency=concurrency, check=check,
        )  # fmt: skip
        return fn

    return deco


def source_stage(name: str, *, version: int = 1, check: Callable[[dict[str, Any]], None] | None = None):
    """Register `gen(ctx, **params) -> Iterable[Cut]` as a source: the first stage of a pipeline
    that makes its own input. It runs in the driver and must be deterministic for a seed (its
    output is the run's input, shard hashes included)."""

    def deco(fn: Callable[..., Iterable[Cut]]):
        _define(name, "source", fn, fn, 0, version=version, check=check)
        return fn

    return deco


_loaded: set[str] = set()


def _import(module: str, what: str) -> None:
    if module in _loaded:
        return
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"cannot import {what}: {e}") from e
    _loaded.add(module)


def load_stage_modules(extra: tuple[str, ...] | list[str] = ()) -> None:
    """Import the modules of a pipeline's own stages (`imports:` in its YAML, for stages outside
    any installed package). Built-in and installed stages need no import: `get_stage` finds them."""
    for mod in extra:
        _import(mod, f"stage module {mod!r}")


# The package's own pyproject.toml, when it runs from its source tree (a checkout, an editable install)
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


@cache
def stage_modules() -> dict[str, str]:
    """Stage name -> the module that registers it: the entry points of group `osum_data.stages` of
    the installed packages, and, when this package runs from its source tree, the table in its
    pyproject.toml, which wins (an editable install keeps the entry points of the day it was
    installed). The engine names no stage module itself."""
    table = {ep.name: ep.value.split(":")[0] for ep in entry_points(group=ENTRY_POINT_GROUP)}
    try:
        project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8")).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return table
    if project.get("name") == "osum-data":
        table.update(project.get("entry-points", {}).get(ENTRY_POINT_GROUP, {}))
    return table


class UnknownStage(UsageError):
    """A pipeline or command names a stage nobody registered."""


def get_stage(name: str) -> StageDef:
    """The registered stage `name`; its module (the entry point of that name) is imported on first
    use, so a pipeline loads only the stages it uses."""
    modules = stage_modules()
    if name not in _REGISTRY and name in modules:
        _import(modules[name], f"stage {name!r} ({modules[name]})")
    if name not in _REGISTRY and "<entry points>" not in _loaded:
        _loaded.add("<entry points>")  # a package whose entry names are not its stages' names
        for entry, module in modules.items():
            if not module.startswith("osum_data."):
                _import(module, f"entry point {entry!r} ({module})")
    try:
        return _REGISTRY[name]
    except KeyError:
        known = sorted({*_REGISTRY, *modules})
        raise UnknownStage(f"unknown stage {name!r}; registered: {', '.join(known)}") from None


def all_stages() -> list[StageDef]:
    """Every stage: those of the entry points and those imported so far, by name."""
    for name, module in stage_modules().items():
        _import(module, f"stage {name!r} ({module})")
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]
