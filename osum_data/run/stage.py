"""The stage contract (DESIGN section 5).

A stage is a named, registered callable over a batch of cuts that returns the cuts it keeps and the
cuts it rejects, each with a reason. Plain functions cover pure stages; classes cover stages that
load something once per worker (a model), because the runner builds one instance per Ray actor.

Most stages think one cut at a time: write `def f(cut, **params) -> Cut | list[Cut]`, raise
`Reject(code, detail)` to drop a cut, and register it with `@per_cut_stage("name")`.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lhotse.cut import Cut

# Modules whose import registers the built-in stages; imported on first lookup.
BUILTIN_STAGE_MODULES = (
    "osum_data.label.audio_check",
    "osum_data.label.text_normalize",
    "osum_data.label.filters",
    "osum_data.label.acoustic",
    "osum_data.template.builder",
)


class Reject(Exception):
    """Raised by a per-cut stage to reject a cut. `code` groups reasons in summaries (short,
    stable, e.g. 'missing_file'); `detail` is the human-readable reason kept in the rejects file."""

    def __init__(self, code: str, detail: str = ""):
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail or code


@dataclass
class StageResult:
    kept: list[Cut] = field(default_factory=list)
    rejected: list[tuple[Cut, Reject]] = field(default_factory=list)


BatchFn = Callable[[list[Cut]], StageResult]
_REGISTRY: dict[str, Callable[..., BatchFn]] = {}


def register_stage(name: str):
    """Register a factory `(**params) -> batch function`. A class whose instances are callable on a
    batch fits as is: its __init__ receives the params once per worker."""

    def deco(factory):
        if name in _REGISTRY:
            raise ValueError(f"stage {name!r} registered twice")
        _REGISTRY[name] = factory
        return factory

    return deco


def apply_per_cut(fn: Callable[..., Cut | list[Cut]], cuts: list[Cut], params: dict) -> StageResult:
    result = StageResult()
    for cut in cuts:
        try:
            out = fn(cut, **params)
        except Reject as r:
            result.rejected.append((cut, r))
            continue
        result.kept.extend(out if isinstance(out, list) else [out])
    return result


def per_cut_stage(name: str):
    """Register `fn(cut, **params)` as a stage that maps each cut independently."""

    def deco(fn):
        def factory(**params: Any) -> BatchFn:
            return lambda cuts: apply_per_cut(fn, cuts, params)

        # The factory takes exactly fn's keyword parameters, so a typo in a YAML fails on load.
        sig = inspect.signature(fn)
        factory.__signature__ = sig.replace(parameters=list(sig.parameters.values())[1:])

        register_stage(name)(factory)
        return fn

    return deco


def load_stage_modules(extra: tuple[str, ...] | list[str] = ()) -> None:
    """Import the built-in stage modules and a pipeline's own (`imports:` in its YAML)."""
    for mod in (*BUILTIN_STAGE_MODULES, *extra):
        importlib.import_module(mod)


def get_stage(name: str) -> Callable[..., BatchFn]:
    load_stage_modules()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; registered: {', '.join(sorted(_REGISTRY))}") from None


def registered_stages() -> list[str]:
    load_stage_modules()
    return sorted(_REGISTRY)
