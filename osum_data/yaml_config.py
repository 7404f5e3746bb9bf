"""YAML for configuration files and `--set key=value` overrides, shared by pipelines and the trainer.

PyYAML follows YAML 1.1, which reads `1e-4` (no dot) as a string; a threshold or a learning rate
must not silently become one, so our loader also resolves such numbers as floats.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or override that cannot be used."""


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


def load_yaml(text: str, unique_keys: bool = False) -> Any:
    """Parse YAML; `unique_keys`: a key repeated in one mapping is a ConfigError naming it."""
    return yaml.load(text, Loader=_UniqueKeyLoader if unique_keys else _Loader)  # noqa: S506


def load_yaml_file(path: Path) -> Any:
    """The file's YAML content; broken YAML or text is a one-line ConfigError naming the file."""
    try:
        return load_yaml(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None


def read_yaml_table(path: Path, what: str) -> Any:
    """A data table's YAML content; an unreadable file or broken YAML is a ValueError naming the
    file and the table (stage checks report it as one line)."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{path}: cannot read the {what}: {first}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (['a', 'b', 'c'], value parsed as YAML; empty value -> None)."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"--set has an empty key: {text!r}")
    return key.strip().split("."), load_yaml(raw) if raw.strip() else None
