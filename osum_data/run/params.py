"""Typed stage parameters: pydantic checks every value against the stage's annotations before any
work starts, and side inputs (CutSets named by a parameter) are loaded once per worker.

A stage annotates its parameters as usual (`max_duration: float`, `channels: Literal["reject",
"first"]`, `noise: SideInput | None = None`); a pipeline entry is validated against a pydantic
model built from that signature. The canonical (JSON) form of the validated values is what the
config hash and `pipeline.yaml` hold, so `lowercase: "false"` and `lowercase: false` are one
configuration, and `max_duration: abc` never reaches a worker.
"""

from __future__ import annotations

import gzip
import hashlib
import inspect
import json
import os
import types
import typing
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, create_model
from pydantic_core import core_schema

from osum_data.errors import UsageError
from osum_data.manifest_io import open_manifest
from osum_data.run.stage import StageDef
from osum_data.sources import SourcePolicy, current_policy, manifest_problem
from osum_data.yaml_config import brief, explain_validation


class SideInput:
    """A CutSet manifest named by a stage parameter (a noise set, RIRs, event clips).

    The config hash covers its content digest, not its path: editing the manifest re-runs the
    shards, moving it does not. The digest also covers the audio the manifest names (path, size and
    mtime of each file, see `audio_stat_digest`): new noise bytes under the same manifest re-run the
    shards too. `cuts()` loads it once per process and keeps it (a worker builds its stages once, so
    that is once per worker).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"SideInput({str(self.path)!r})"

    @property
    def planned(self) -> bool:
        """A manifest a plan will make before this run starts (`${name}` in a run's `set:`): while the
        plan is validated it is a placeholder, so checks of its content must wait for the run."""
        return self.path in _PLANNED.get()

    @property
    def digest(self) -> str:
        """The manifest's content digest combined with the stat digest of the audio it names."""
        path, st = str(self.path.resolve()), self.path.stat()
        manifest = _file_digest(path, st.st_mtime_ns, st.st_size)
        audio = audio_stat_digest(_audio_files(path, st.st_mtime_ns, st.st_size))
        return hashlib.sha256(f"{manifest}\0{audio}".encode()).hexdigest()[:16]

    def cuts(self):
        """The manifest as an eager CutSet (cached per process)."""
        return _load_cutset(str(self.path.resolve()), self.digest)

    def has_cut(self, keep: Callable[[Any], bool]) -> bool:
        """Whether some cut of the manifest passes `keep` (a module-level function, so the answer
        can be cached). Reads lazily up to the first such cut: the driver checks that a stage will
        find what it needs before any work, without loading a large manifest."""
        st = self.path.stat()
        return _has_cut(str(self.path.resolve()), st.st_mtime_ns, st.st_size, keep)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        def validate(value: Any) -> SideInput:
            if isinstance(value, SideInput):
                return value
            if not isinstance(value, str | Path) or not str(value).strip():
                raise ValueError("expected the path of a cuts manifest (jsonl or jsonl.gz)")
            path = Path(value).expanduser()
            if path in _PLANNED.get():
                return cls(path)
            if path.is_dir():
                raise ValueError(f"side-input manifest {str(path)!r} is a directory, not a cuts manifest")
            if not path.is_file():
                raise ValueError(f"side-input manifest {str(path)!r} does not exist")
            st = path.stat()
            problem = _manifest_problem(str(path.resolve()), st.st_mtime_ns, st.st_size)
            if problem:
                raise ValueError(f"side-input manifest {str(path)!r} {problem}")
            unsafe = _unsafe_side_input(str(path.resolve()), st.st_mtime_ns, st.st_size, current_policy())
            if unsafe:
                raise ValueError(f"side-input manifest {str(path)!r}: {unsafe}")
            return cls(path)

        return core_schema.no_info_plain_validator_function(
            validate, serialization=core_schema.plain_serializer_function_ser_schema(lambda v: str(v.path))
        )


_PLANNED: ContextVar[frozenset[Path]] = ContextVar("planned_side_inputs", default=frozenset())


@contextmanager
def planned_side_inputs(paths: Iterable[Path]) -> Iterator[None]:
    """While a plan is validated: these placeholder paths stand for manifests the plan makes later."""
    token = _PLANNED.set(frozenset(Path(p) for p in paths))
    try:
        yield
    finally:
        _PLANNED.reset(token)


@cache
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


@cache
def _audio_files(path: str, mtime_ns: int, size: int) -> tuple[str, ...]:
    """The audio files (recording sources of type `file`) a cuts manifest names, sorted, each once;
    relative paths as lhotse opens them (from the current directory). Cached per manifest version."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            sources = node.get("sources")
            for src in sources if isinstance(sources, list) else []:
                if isinstance(src, dict) and src.get("type") == "file" and isinstance(src.get("source"), str):
                    found.add(os.path.abspath(src["source"]))
            for value in node.values():
                if isinstance(value, dict | list):
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    with open_manifest(path, "rt") as f:
        for line in f:
            if line.strip():
                try:
                    walk(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a broken line is the manifest check's to name, not the digest's
    return tuple(sorted(found))


def audio_stat_digest(files: Iterable[str]) -> str:
    """Digest of (path, size, mtime) of each file, 'missing' for one that is gone. Not cached: it
    must see audio rewritten under an unchanged manifest. A stat per file, not a read of its bytes
    (docs/decisions.md, issue 15: 10,000 clips cost milliseconds to stat, seconds to hash)."""
    h = hashlib.sha256()
    for name in files:
        try:
            st = os.stat(name)
            h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{name}\0missing\n".encode())
    return h.hexdigest()[:16]


@cache
def _unsafe_side_input(path: str, mtime_ns: int, size: int, policy: SourcePolicy) -> str | None:
    """Its first cut with an id or audio source the policy refuses (osum_data/sources.py)."""
    return manifest_problem(path, policy)


@cache
def _load_cutset(path: str, digest: str):
    from lhotse import CutSet

    return CutSet.from_file(path).to_eager()


def _first_line(path: str) -> str | None:
    """The first non-blank line of a JSON-lines file (gzip or plain), None when there is none."""
    with open_manifest(path, "rt") as f:
        for line in f:
            if line.strip():
                return line
    return None


@cache
def _manifest_problem(path: str, mtime_ns: int, size: int) -> str | None:
    """Why the file is not a cuts manifest (judged by its first line), or None when it looks like one."""
    from lhotse.cut import Cut
    from lhotse.serialization import deserialize_item

    try:
        line = _first_line(path)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        return f"is not a readable gzip file ({e}); re-create it"
    except UnicodeDecodeError:
        return "is not a cuts manifest: not UTF-8 text (a .gz name is needed for gzip)"
    except OSError as e:
        return f"cannot be read: {e.strerror or e}"
    if line is None:
        return "is empty: it holds no cuts"
    try:
        item = json.loads(line)
    except json.JSONDecodeError as e:
        return f"is not a cuts manifest: line 1 is not JSON ({e.msg})"
    if not isinstance(item, dict):
        return f"is not a cuts manifest: line 1 is a JSON {type(item).__name__}, not a cut"
    try:
        obj = deserialize_item(item)
    except Exception as e:  # lhotse's from_dict raises whatever a missing key causes
        return f"is not a cuts manifest: line 1 is not a cut ({type(e).__name__}: {e})"
    if not isinstance(obj, Cut):
        return f"is not a cuts manifest: line 1 is a {type(obj).__name__}, not a cut"
    return None


@cache
def _has_cut(path: str, mtime_ns: int, size: int, keep: Callable[[Any], bool]) -> bool:
    from lhotse import CutSet

    try:
        return any(keep(c) for c in CutSet.from_jsonl_lazy(path))
    except Exception as e:  # a broken line past the first
        raise ValueError(f"side-input manifest {path!r} cannot be read: {type(e).__name__}: {e}") from None


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"must start with http:// or https://, got {value!r}")
    return value


def _existing_file(value: str) -> str:
    path = Path(value).expanduser()
    if path.is_dir():
        raise ValueError(f"{value!r} is a directory; give a file")
    if not path.is_file():
        raise ValueError(f"file {value!r} does not exist")
    return value


def _existing_dir(value: str) -> str:
    path = Path(value).expanduser()
    if path.is_file():
        raise ValueError(f"{value!r} is a file; give a directory")
    if not path.is_dir():
        raise ValueError(f"directory {value!r} does not exist")
    return value


# Parameter types for values naming something outside the pipeline, checked at load time (in the
# driver, before any worker starts) rather than when a worker first uses them.
HttpUrl = Annotated[str, AfterValidator(_http_url)]
ExistingFile = Annotated[str, AfterValidator(_existing_file)]
ExistingDir = Annotated[str, AfterValidator(_existing_dir)]


class ParamError(UsageError):
    """Parameters of one stage entry that cannot be used; the message is one line."""


@cache
def params_model(defn: StageDef) -> type[BaseModel]:
    """A pydantic model of the stage's parameters (extra keys forbidden)."""
    try:
        hints = typing.get_type_hints(defn.hints_of, include_extras=True)
    except Exception:  # unresolvable annotations: fall back to untyped rather than refuse the stage
        hints = {}
    fields: dict[str, Any] = {}
    for p in defn.signature.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[p.name] = (hints.get(p.name, Any), default)
    config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, validate_default=True)
    return create_model(f"{defn.name}_params", __config__=config, **fields)


def validate_params(
    defn: StageDef, params: dict[str, Any], where: str = ""
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(typed values for the stage, canonical JSON values for hash and YAML), or a ParamError whose
    one line starts with `where` (default: the stage's name)."""
    where = where or f"stage {defn.name!r}"
    model = params_model(defn)
    try:
        obj = model(**params)
    except ValidationError as e:
        known = list(model.model_fields) or ["none"]
        raise ParamError(explain_validation(e, where, lambda _: known, noun="parameter")) from None
    typed = {name: getattr(obj, name) for name in type(obj).model_fields}
    if defn.check is not None:
        try:
            defn.check(typed)
        except ValueError as e:
            raise ParamError(f"{where}: {e}") from None
    return typed, obj.model_dump(mode="json")


def side_inputs(typed: dict[str, Any]) -> dict[str, SideInput]:
    """The SideInput values among a stage's typed parameters, by parameter name."""
    return {k: v for k, v in typed.items() if isinstance(v, SideInput)}


def type_name(t: Any) -> str:
    """A parameter's type as a user writes it in Python (`float | None`, `Literal['a', 'b']`)."""
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is Annotated:
        return type_name(args[0])
    if t is type(None):
        return "None"
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_name(a) for a in args)}]"
    return t.__name__ if isinstance(t, type) else str(t).replace("typing.", "")


def describe_stage(defn: StageDef) -> dict[str, Any]:
    """A stage's name, kind, version, resources and typed parameters (name, type, default), as
    `osum-data stages` lists them; the parameters are the ones a pipeline entry is checked against."""
    fields = params_model(defn).model_fields
    params = []
    for p in defn.signature.parameters.values():
        if p.name in fields:
            default = "required" if p.default is inspect.Parameter.empty else p.default
            params.append({"name": p.name, "type": type_name(fields[p.name].annotation), "default": default})
    r = defn.resources
    return {
        "stage": defn.name,
        "kind": defn.kind,
        "version": defn.version,
        "resources": {"num_cpus": r.num_cpus, "num_gpus": r.num_gpus, "concurrency": r.concurrency},
        "uses_llm": defn.uses_llm,
        "params": params,
        "doc": (defn.doc or "").split("\n\n")[0].replace("\n", " "),
    }


def stage_listing(defs: Iterable[StageDef]) -> str:
    """The text of `osum-data stages`: per stage a heading line, its summary and its parameters."""
    out = []
    for d in map(describe_stage, defs):
        r = d["resources"]
        pool = f"pool {r['concurrency']}" if r["concurrency"] else "pool per worker"
        llm = ", LLM" if d["uses_llm"] else ""
        out.append(
            f"{d['stage']}  ({d['kind']}, v{d['version']}; cpus {r['num_cpus']:g}, gpus {r['num_gpus']:g}, "
            f"{pool}{llm})"
        )
        if d["doc"]:
            out.append(f"    {d['doc']}")
        for p in d["params"]:
            default = p["default"] if p["default"] == "required" else f"= {brief(p['default'])}"
            out.append(f"    {p['name']}: {p['type']} {default}")
    return "\n".join(out)
