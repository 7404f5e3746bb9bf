"""YAML for configuration files and `--set key=value` overrides, shared by pipelines and the trainer.

PyYAML follows YAML 1.1, which reads `1e-4` (no dot) as a string; a threshold or a learning rate
must not silently become one, so our loader also resolves such numbers as floats.

Every user-supplied YAML goes through `load_yaml` (pipelines, stage entries, `--set` values, mix,
plan and trainer configs, data tables). It refuses a document whose aliases expand it beyond
MAX_EXPANDED nodes+characters ("billion laughs": a few lines that name a list of a list of ... ),
and recursive aliases, before any Python object is built: PyYAML shares aliased objects, so loading
is cheap, but anything that walks the result (validation, `repr` in an error message, JSON) expands
it and exhausts memory. `brief` bounds what an error message prints of a value.
"""

from __future__ import annotations

import copy
import re
import reprlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from osum_data.errors import UsageError


class ConfigError(UsageError):
    """A config file or override that cannot be used (exit code 2)."""


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


class _UniqueKeyLoader(_Loader):
    """Refuses a key given twice in one mapping: YAML's last-wins would silently drop the first
    (merge keys `<<` still override as YAML means them)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in first:
                raise ConfigError(f"line {line}: key {key!r} given twice (first on line {first[key]})")
            first[key] = line
        return super().construct_mapping(node, deep=deep)


MAX_EXPANDED = 5_000_000  # nodes + scalar characters once every alias is expanded (~ a 5 MB file)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def check_expansion(root: yaml.Node, limit: int = MAX_EXPANDED) -> None:
    """ConfigError when the node graph, with every alias expanded, is larger than `limit` (nodes
    plus scalar characters) or refers to itself. Each distinct node is visited once."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            own = 1 + (len(node.value) if isinstance(node, yaml.ScalarNode) else 0)
            size[key] = min(limit + 1, own + sum(size[id(c)] for c in _children(node)))
            if key == id(root) and size[key] > limit:
                line = node.start_mark.line + 1
                raise ConfigError(
                    f"line {line}: the YAML expands to more than {limit:,} nodes and characters "
                    "(aliases repeating aliases); refused"
                )
            continue
        if key in size:
            continue
        if key in on_path:
            raise ConfigError(f"line {node.start_mark.line + 1}: a YAML alias refers to itself; refused")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node))


def load_yaml(text: str, unique_keys: bool = True) -> Any:
    """Parse YAML; `unique_keys`: a key repeated in one mapping is a ConfigError naming it. A
    document that expands too far through aliases is a ConfigError before anything is built."""
    loader = (_UniqueKeyLoader if unique_keys else _Loader)(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_expansion(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


_BRIEF = reprlib.Repr()
_BRIEF.maxstring = _BRIEF.maxother = 120
_BRIEF.maxlevel = 3


def brief(value: Any) -> str:
    """A bounded repr of a user-supplied value, for error messages (nested, aliased or huge values
    would otherwise print megabytes)."""
    return _BRIEF.repr(value)


def load_yaml_file(path: Path, unique_keys: bool = True) -> Any:
    """The file's YAML content; broken YAML or text is a one-line ConfigError naming the file."""
    try:
        return load_yaml(path.read_text(encoding="utf-8"), unique_keys=unique_keys)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def read_yaml_table(path: Path, what: str) -> Any:
    """A data table's YAML content; an unreadable file or broken YAML is a ValueError naming the
    file and the table (stage checks report it as one line)."""
    try:
        return load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ConfigError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{path}: cannot read the {what}: {first}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (['a', 'b', 'c'], value parsed as YAML; empty value -> None)."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"--set has an empty key: {text!r}")
    try:
        value = load_yaml(raw) if raw.strip() else None
    except ConfigError as e:
        raise ConfigError(f"--set {key.strip()[:100]}: {e}") from None
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"--set {key.strip()[:100]}: not valid YAML: {problem}") from None
    return key.strip().split("."), value


# `locate(data, first_key, text)` -> the mapping a dotted path starts in, and the rest of the path;
# a pipeline resolves `resample.sample_rate` to its stage entry named `resample`.
Locator = Callable[[dict[str, Any], list[str], str], tuple[dict[str, Any], list[str]]]


def apply_overrides(
    raw: dict[str, Any], overrides: list[str], locate: Locator | None = None
) -> dict[str, Any]:
    """The one `--set a.b.c=value` rule (pipelines, mixes, plans, LLM settings, the trainer): a copy
    of `raw` with each value (parsed as YAML) set at its dotted path, creating mappings on the way;
    a path that runs into a non-mapping is a ConfigError naming the override."""
    data = copy.deepcopy(raw) if raw is not None else {}
    for text in overrides:
        path, value = parse_override(text)
        node, rest = locate(data, path, text) if locate else (data, path)
        for part in rest[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text[:100]!r}: {part!r} is not a mapping")
            node = child
        node[rest[-1]] = value
    return data


def explain_validation(
    error: Any, source: str, known: Callable[[tuple], list[str]] | None = None, noun: str = "key"
) -> str:
    """One line for a pydantic ValidationError: the file, the key path and what is wrong. A typo is
    named before the 'missing' error it causes; `known(loc)` lists the keys allowed at a location,
    for the hint after an unknown key; `noun` names what the keys are (a stage's "parameter")."""
    errors = error.errors()
    err = next((x for x in errors if x["type"] == "extra_forbidden"), errors[0])
    loc = tuple(err["loc"])
    key = ".".join(str(x) for x in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        allowed = known(loc[:-1]) if known else []
        hint = f"; known {noun}s: {', '.join(allowed)}" if allowed else ""
        text = f"unknown {noun} {key!r}{hint}"
    elif err["type"] == "missing":
        text = f"missing {noun} {key!r}"
    else:
        msg = err["msg"].removeprefix("Value error, ")
        text = f"{key}={brief(err.get('input'))}: {msg}" if loc else msg  # a whole-entry check
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{source}: {text}{more}"


def model_keys(model: Any) -> Callable[[tuple], list[str]]:
    """`known` for `explain_validation`: the keys a pydantic `model` allows at a location, following
    nested models through fields, list indexes and mapping keys."""

    def known(loc: tuple) -> list[str]:
        node = model
        for part in loc:
            field = node.model_fields.get(part) if isinstance(part, str) else None
            if field is None:  # a list index or a mapping's key (the path comes from pydantic)
                continue
            node = _model_in(field.annotation)
            if node is None:
                return []
        return list(node.model_fields)

    return known


def _model_in(annotation: Any) -> Any:
    """The pydantic model a field holds (directly, in a list or dict, or optional), or None."""
    import typing

    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        return annotation
    for arg in reversed(typing.get_args(annotation)):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
