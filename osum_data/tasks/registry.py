"""The task registry: tasks, label vocabularies and corpus label maps, all loaded from YAML.

Labels are data, not code (DESIGN section 3): adding a class or a corpus mapping is a YAML edit.
Everything here is immutable and cached, so stages on Ray workers can call it freely.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from osum_data.errors import UsageError
from osum_data.yaml_config import load_yaml_file

DATA_DIR = Path(__file__).parent


class LabelError(UsageError):
    """A label value that no vocabulary or corpus map knows."""


@dataclass(frozen=True)
class NoLabel:
    """A corpus value that deliberately maps to no canonical label (corpus_maps.yaml `{keep: why}` or
    `{drop: why}`): `keep` leaves the row without that label (e.g. still good ASR data), drop rejects it."""

    keep: bool
    reason: str


# Key of a corpus table that matches every value the table does not list (AudioSet's 500+ classes).
WILDCARD = "*"


@dataclass(frozen=True)
class Label:
    id: str
    tag: str
    en: str
    zh: str
    tag_en: str | None = None
    generic: bool = False
    aliases: tuple[str, ...] = ()  # other spellings of the tag (OSUM dialects), accepted when parsing


@dataclass(frozen=True)
class Vocabulary:
    """Canonical label ids of one field (gender, age, ...) and how each renders."""

    name: str
    labels: dict[str, Label]

    def get(self, value: str) -> Label:
        try:
            return self.labels[value]
        except KeyError:
            raise LabelError(
                f"unknown {self.name} label {value!r}; known: {', '.join(self.labels)}"
            ) from None

    def render(self, value: str, english_tags: bool = False) -> str:
        label = self.get(value)
        return label.tag_en if english_tags and label.tag_en else label.tag

    def from_tag(self, tag: str) -> str:
        """Label id for a rendered tag; case-insensitive because OSUM lowercases targets."""
        folded = tag.casefold()
        for label in self.labels.values():
            if folded in (label.tag.casefold(), (label.tag_en or "").casefold()):
                return label.id
            if any(folded == a.casefold() for a in label.aliases):
                return label.id
        raise LabelError(f"tag {tag!r} is not a {self.name} label")


@dataclass(frozen=True)
class Task:
    id: str
    key: str
    format: str  # transcript | timestamps | labels | chat | answer
    x_only_key: str | None = None
    labels: tuple[str, ...] = field(default_factory=tuple)
    # "pool": the instruction is drawn from the prompt pool of the key; "sample": every sample brings
    # its own (the question of a QA sample), so the key has no pool.
    instruction: str = "pool"

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.key,) + ((self.x_only_key,) if self.x_only_key else ())


@dataclass(frozen=True)
class Registry:
    tasks: dict[str, Task]
    vocabularies: dict[str, Vocabulary]
    corpus_maps: dict[str, dict[str, dict[str, str | NoLabel]]]
    age_buckets: tuple[tuple[str, float | None], ...]
    chat_separator: str
    timestamp_resolution: float
    reasoning_marks: tuple[str, str] = ("<think>", "</think>")  # around a reasoning span in a target

    def task(self, task_id: str) -> Task:
        try:
            return self.tasks[task_id]
        except KeyError:
            raise KeyError(f"unknown task {task_id!r}; known: {', '.join(self.tasks)}") from None

    def task_for_key(self, key: str) -> tuple[Task, bool]:
        """(task, x_only) for an exact tag key such as '<TRANSCRIBE> <EMOTION>'."""
        for task in self.tasks.values():
            if key == task.key:
                return task, False
            if key == task.x_only_key:
                return task, True
        raise KeyError(f"unknown task key {key!r}")

    @property
    def all_keys(self) -> list[str]:
        return [k for t in self.tasks.values() for k in t.keys]

    @property
    def pool_keys(self) -> list[str]:
        """Keys whose instructions come from the prompt pools (all but per-sample-instruction tasks)."""
        return [k for t in self.tasks.values() if t.instruction == "pool" for k in t.keys]

    def vocabulary(self, name: str) -> Vocabulary:
        try:
            return self.vocabularies[name]
        except KeyError:
            raise KeyError(f"no vocabulary {name!r}") from None

    def lookup(self, field_name: str, value: str, corpus: str = "common") -> str | NoLabel:
        """A corpus value -> canonical id, or the NoLabel the corpus map declares for it.

        Order: the corpus's own table, the shared `common` table, a canonical id itself, then the
        corpus's `*` entry. Anything else is a LabelError naming the value and the corpus map.
        """
        vocab = self.vocabulary(field_name)
        folded = str(value).strip().casefold()
        table = self.corpus_maps.get(field_name, {})
        for name in (corpus, "common"):
            if folded in table.get(name, {}):
                return table[name][folded]
        if folded in vocab.labels:
            return folded
        if WILDCARD in table.get(corpus, {}):
            return table[corpus][WILDCARD]
        raise LabelError(f"unknown {field_name} label {value!r} (corpus map {corpus!r})")

    def map_label(self, field_name: str, value: str, corpus: str = "common") -> str:
        """Map a corpus label value onto a canonical id; unknown or deliberately unmapped: LabelError."""
        found = self.lookup(field_name, value, corpus)
        if isinstance(found, NoLabel):
            raise LabelError(
                f"{field_name} label {value!r} of corpus {corpus!r} maps to no label: {found.reason}"
            )
        return found

    def age_bucket(self, years: float, buckets: tuple[tuple[str, float | None], ...] | None = None) -> str:
        """Bucket of an age in years: the first whose inclusive `max` is >= years. `buckets` overrides
        labels.yaml's thresholds (e.g. a stage re-bucketing custom.age_years with other limits)."""
        for bucket, upper in buckets or self.age_buckets:
            if bucket not in self.vocabulary("age").labels:
                raise LabelError(f"age bucket {bucket!r} is not an age label")
            if upper is None or years <= upper:
                return bucket
        raise LabelError(f"age {years} falls in no bucket")


def _load_yaml(name: str) -> dict:
    return load_yaml_file(DATA_DIR / name)  # a repeated key is an error, not a silent last-wins


def _map_target(field_name: str, corpus: str, src: str, dst: object, vocab: Vocabulary) -> str | NoLabel:
    """Validate one corpus_maps.yaml entry: a canonical id, or {keep: reason} / {drop: reason}."""
    where = f"corpus map {field_name}/{corpus}: {src!r}"
    if src != src.casefold():
        raise ValueError(f"{where}: keys must be lower case (values are matched case-insensitively)")
    if isinstance(dst, dict):
        if len(dst) != 1 or next(iter(dst)) not in ("keep", "drop") or not str(next(iter(dst.values()))):
            raise ValueError(
                f"{where}: expected a label id, {{keep: reason}} or {{drop: reason}}, got {dst!r}"
            )
        policy, reason = next(iter(dst.items()))
        return NoLabel(keep=policy == "keep", reason=str(reason))
    if dst not in vocab.labels:
        raise ValueError(f"{where} -> unknown {dst!r}")
    return str(dst)


@cache
def registry() -> Registry:
    """The registry built from tasks.yaml, labels.yaml and corpus_maps.yaml (loaded once)."""
    t = _load_yaml("tasks.yaml")
    lab = _load_yaml("labels.yaml")
    vocabs = {
        name: Vocabulary(
            name,
            {
                lid: Label(id=lid, **{**spec, "aliases": tuple(spec.get("aliases", ()))})
                for lid, spec in labels.items()
            },
        )
        for name, labels in lab["vocabularies"].items()
    }
    tasks = {}
    for tid, spec in t["tasks"].items():
        for f in spec.get("labels", []):
            if f not in vocabs:
                raise ValueError(f"task {tid}: label field {f!r} has no vocabulary")
        tasks[tid] = Task(
            id=tid,
            key=spec["key"],
            format=spec["format"],
            x_only_key=spec.get("x_only_key"),
            labels=tuple(spec.get("labels", [])),
            instruction=spec.get("instruction", "pool"),
        )
        if tasks[tid].instruction not in ("pool", "sample"):
            raise ValueError(f"task {tid}: instruction must be 'pool' or 'sample'")
    maps = {
        field_name: {
            corpus: {
                str(src): _map_target(field_name, corpus, str(src), dst, vocabs[field_name])
                for src, dst in table.items()
            }
            for corpus, table in tables.items()
        }
        for field_name, tables in _load_yaml("corpus_maps.yaml").items()
    }
    buckets = tuple((b["id"], b["max"]) for b in lab["age_buckets"])
    return Registry(
        tasks=tasks,
        vocabularies=vocabs,
        corpus_maps=maps,
        age_buckets=buckets,
        chat_separator=t["chat_separator"],
        timestamp_resolution=float(t["timestamp_resolution"]),
        reasoning_marks=(t["reasoning"]["open"], t["reasoning"]["close"]),
    )
