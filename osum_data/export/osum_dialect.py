"""OSUM trainer dialects: which keys, tags and `extra` fields an OSUM export writes, and its prompt file.

OSUM draws each sample's instruction from its prompt config by the sample's `task` key and ignores
`extra.instruction`, so an export is only usable with a `prompt_config.yaml` holding our pools for
every key it writes (`write_prompt_config`). The two trainers differ (osum_dialects.yaml, with the
sources): OSUM v1 knows 11 keys (no X-only `<GENDER>`, `<EMOTION>`, `<CAPTION>`, `<AGE>`, `<STYLE>`,
`<S2TCHAT>`) and has no way to carry a per-sample instruction; OSUM-EChat knows the X-only keys, takes
`extra.question` as the prompt, spells anger `<ANGER>` and reads `extra.age`/`extra.gender` as tags.

Decision for keys a dialect lacks: refuse, never map. Mapping an X-only sample onto its ASR+X key
would change its target and the mix's planned X-only share behind the user's back; the error names
the key, a cut and the two ways out (the echat dialect, or a mix without X-only samples).
Every check runs in the driver over the whole input before any work (`scan`), and the stage applies
the same `convert` to each line, so what is written is what was checked.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from osum_data.errors import UsageError
from osum_data.manifest_io import atomic_path, read_jsonl
from osum_data.tasks import parse_target, prompt_language, prompt_pool, registry
from osum_data.tasks.formats import FormatError

DIALECT_FILE = Path(__file__).with_name("osum_dialects.yaml")
DEFAULT_DIALECT = "echat"
PROMPT_CONFIG = "prompt_config.yaml"
_TAG = re.compile(r"<[^<>]*>")
_TIME = re.compile(r"<\d+(?:\.\d+)?>")


class DialectError(UsageError):
    """A sample the chosen OSUM dialect cannot hold (a key, tag or field it does not have)."""


@dataclass(frozen=True)
class Dialect:
    name: str
    description: str
    keys: tuple[str, ...]
    tags: dict[str, dict[str, str]]  # vocabulary -> canonical label id -> the dialect's tag
    structure: frozenset[str]  # non-label tags a target may hold (the chat separator)
    question_field: str | None  # extra field that carries a per-sample instruction
    extra_tags: tuple[str, ...]  # label fields also written into `extra` as tags
    strips_leading_tag: bool

    def tag_set(self, vocabulary: str) -> frozenset[str]:
        return frozenset(self.tags.get(vocabulary, {}).values())

    def all_tags(self) -> frozenset[str]:
        return frozenset(t for v in self.tags.values() for t in v.values()) | self.structure


@cache
def load_dialect(name: str) -> Dialect:
    """The named dialect, validated against the registry: every label id it maps is one of ours and
    every tag it writes parses back to that label (so our reader reads its exports)."""
    data = yaml.safe_load(DIALECT_FILE.read_text(encoding="utf-8"))["dialects"]
    if name not in data:
        raise DialectError(f"unknown OSUM dialect {name!r}; dialects: {', '.join(data)}")
    spec = data[name]
    reg = registry()
    tags = {str(v): {str(k): str(t) for k, t in m.items()} for v, m in spec["tags"].items()}
    for vocab, mapping in tags.items():
        for label_id, tag in mapping.items():
            if reg.vocabulary(vocab).from_tag(tag) != label_id:
                raise ValueError(f"{DIALECT_FILE}: {name}: {vocab} tag {tag} does not parse as {label_id!r}")
    return Dialect(
        name=name,
        description=str(spec["description"]),
        keys=tuple(spec["keys"]),
        tags=tags,
        structure=frozenset(spec.get("structure") or ()),
        question_field=spec.get("question_field"),
        extra_tags=tuple(spec.get("extra_tags") or ()),
        strips_leading_tag=bool(spec.get("strips_leading_tag", False)),
    )


def key_problem(dialect: Dialect, key: str) -> str | None:
    """Why the dialect cannot train samples of `key`, or None."""
    task, x_only = registry().task_for_key(key)
    if key in dialect.keys:
        return None
    if task.instruction == "sample":
        if dialect.question_field:
            return None
        return (
            f"key {key} brings its own instruction per sample, and dialect {dialect.name} has no field "
            "that carries one (its prompts come only from prompt_config.yaml by key)"
        )
    hint = " (an X-only key; build the mix without X-only samples: template x_only_ratio 0)" if x_only else ""
    return f"dialect {dialect.name} has no task key {key}{hint}; export with another --dialect"


def _label_tags(dialect: Dialect, field_name: str, values: str | list[str]) -> list[str]:
    out = []
    for v in values if isinstance(values, list) else [values]:
        tag = dialect.tags.get(field_name, {}).get(v)
        if tag is None:
            known = ", ".join(sorted(dialect.tag_set(field_name))) or "none"
            raise DialectError(
                f"{field_name} label {v!r} has no tag in dialect {dialect.name} (its tags: {known}); "
                "leave such cuts out of the mix or pick another --dialect"
            )
        out.append(tag)
    return out


def convert(
    dialect: Dialect,
    key: str,
    txt: str,
    instruction: str | None = None,
    age: str | None = None,
    gender: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """(target in the dialect's tags, `extra` fields to set) for one sample of `key`; DialectError
    says why the dialect cannot hold it. `txt` must be a valid target of ours (parse_target)."""
    problem = key_problem(dialect, key)
    if problem:
        raise DialectError(problem)
    reg = registry()
    task, x_only = reg.task_for_key(key)
    parsed = parse_target(key, txt)
    if parsed.reasoning is not None:
        raise DialectError(
            f"the target holds a reasoning span; dialect {dialect.name} has no reasoning marks"
        )
    if task.format == "labels":
        tags = [t for f in task.labels for t in _label_tags(dialect, f, parsed.labels[f])]
        txt = ("" if x_only else parsed.transcript or "") + "".join(tags)
    allowed = dialect.all_tags()
    for tag in _TAG.findall(txt):
        if tag in allowed or (task.format == "timestamps" and _TIME.fullmatch(tag)):
            continue
        raise DialectError(f"tag {tag} is not in dialect {dialect.name}'s tag sets")
    extra: dict[str, Any] = {}
    if task.instruction == "sample":
        if not instruction or not instruction.strip():
            raise DialectError(
                f"key {key} needs the sample's own instruction (custom.instruction), and it has none"
            )
        extra[dialect.question_field] = instruction
    for field_name, value in (("age", age), ("gender", gender)):
        if field_name in dialect.extra_tags and value:
            extra[field_name] = _label_tags(dialect, field_name, str(value))[0]
    return txt, extra


def _sample_fields(
    raw: dict[str, Any],
) -> tuple[str, str, str | None, str | None, str | None, str | None] | None:
    """(key, target, instruction, age, gender, language) of a raw cut dict, or None when it is no
    parseable sample (the export stage rejects those with its own reason)."""
    custom = raw.get("custom") or {}
    sups = raw.get("supervisions") or []
    sup = sups[0] if sups and isinstance(sups[0], dict) else {}
    if "task" not in custom and "target" not in custom:
        key, txt = registry().task("asr").key, sup.get("text")
    else:
        key, txt = custom.get("task"), custom.get("target")
    if not isinstance(key, str) or not isinstance(txt, str) or key not in registry().all_keys:
        return None
    try:
        parse_target(key, txt)
    except (FormatError, ValueError, KeyError):
        return None
    sup_custom = sup.get("custom") or {}
    return key, txt, custom.get("instruction"), sup_custom.get("age"), sup.get("gender"), sup.get("language")


def scan(items: Iterable[Any], dialect: Dialect, where: str) -> dict[str, list[str]]:
    """Check every sample against the dialect before any work; returns the prompt languages per key
    written. Raises DialectError naming the first refused cut, with counts per reason."""
    langs: dict[str, set[str]] = {}
    refused: Counter[str] = Counter()
    first: dict[str, str] = {}
    for raw in items:
        fields = _sample_fields(raw) if isinstance(raw, dict) else None
        if fields is None:
            continue
        key, txt, instruction, age, gender, language = fields
        try:
            convert(dialect, key, txt, instruction, age, gender)
        except DialectError as e:
            reason = str(e)
            refused[reason] += 1
            first.setdefault(reason, str(raw.get("id")))
            continue
        langs.setdefault(key, set()).add(prompt_language(language))
    if refused:
        total = sum(refused.values())
        reasons = "; ".join(f"{n} cut(s), e.g. {first[r]!r}: {r}" for r, n in refused.most_common(5))
        raise DialectError(
            f"{where}: {total} cut(s) cannot be exported for dialect {dialect.name}: {reasons}"
        )
    order = ("zh", "en")
    return {
        k: sorted(v, key=lambda x: order.index(x) if x in order else len(order)) for k, v in langs.items()
    }


def scan_manifest(path: str | Path, dialect: Dialect) -> dict[str, list[str]]:
    return scan(read_jsonl(path), dialect, str(path))


def prompt_config(keys: dict[str, list[str]], dialect: Dialect) -> dict[str, list[str]]:
    """Our pools for every key written (in registry order), in the languages its samples use; keys
    whose samples carry their own instruction (in `extra.<question_field>`) have no entry."""
    reg = registry()
    out: dict[str, list[str]] = {}
    for key in reg.all_keys:
        if key not in keys or key not in reg.pool_keys:
            continue
        out[key] = [text for lang in keys[key] for text in prompt_pool(lang)[key]]
    return out


def write_prompt_config(out: Path, keys: dict[str, list[str]], dialect: Dialect) -> dict[str, list[str]]:
    """Write OUT/prompt_config.yaml (the file OSUM's --prompt_conf / prompt_config path takes)."""
    config = prompt_config(keys, dialect)
    header = (
        f"# OSUM prompt config written by `osum-data export osum --dialect {dialect.name}`: osum-data's\n"
        "# instruction pools for every task key of this export (OSUM draws a sample's instruction from\n"
        "# here by its `task`; it ignores extra.instruction)."
    )
    if dialect.question_field:
        header += f"\n# Keys with per-sample instructions carry them in extra.{dialect.question_field}."
    with atomic_path(out / PROMPT_CONFIG) as tmp:
        body = yaml.safe_dump(config, allow_unicode=True, sort_keys=False, width=1000)
        tmp.write_text(header + "\n" + body, encoding="utf-8")
    return config
