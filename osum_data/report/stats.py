"""What the report shows, computed in one streaming pass over a folder's cuts.

A folder is a pipeline run (`summary.json` with `pipeline`), a mix (`type: mix`) or an export
(`type: export`); any other folder is searched (two levels deep) for those, one report section each.
Memory is flat in the corpus size: durations and SNRs go into fixed histogram bins, labels into
counters.
"""

from __future__ import annotations

import gzip
import json
import math
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from osum_data.errors import UsageError
from osum_data.manifest_io import loads_line, open_manifest

DURATION_BINS = np.concatenate([np.arange(0, 30.5, 0.5), [45, 60, np.inf]])
SNR_BINS = np.arange(-10, 41, 2.5)
LABEL_FIELDS = ("gender", "age", "emotion", "style", "events")


@dataclass
class Section:
    kind: str  # run | mix | export
    path: Path
    title: str
    summary: dict[str, Any]
    cuts: int = 0
    hours_by_task: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    hours_by_label: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    durations: dict[str, np.ndarray] = field(default_factory=dict)  # task -> counts per DURATION_BINS
    label_sources: Counter = field(default_factory=Counter)  # (field, value, source) -> cuts
    snr: np.ndarray = field(default_factory=lambda: np.zeros(len(SNR_BINS) - 1, dtype=np.int64))
    snr_values: int = 0
    snr_out_of_range: int = 0

    @property
    def rejects(self) -> dict[str, int]:
        return dict(self.summary.get("rejected_by_reason") or {})

    def llm_tokens(self) -> dict[str, dict[str, float]]:
        """Per stage: the token and request counters it reported (summed over its shards)."""
        out = {}
        for st in self.summary.get("stages") or []:
            found: dict[str, float] = {}
            _collect_llm(st.get("counters") or {}, found)
            if found:
                out[st["stage"]] = found
        return out


def _collect_llm(counters: dict[str, Any], found: dict[str, float]) -> None:
    for k, v in counters.items():
        if isinstance(v, dict):
            _collect_llm(v, found)
        elif isinstance(v, int | float) and (k.endswith("tokens") or k in ("requests", "cache_hits")):
            found[k] = found.get(k, 0) + v


class SummaryError(UsageError):
    """A summary.json the report cannot use (one line naming the file)."""


class _Shape(BaseModel):
    """The parts of a summary the report reads; anything else may be there too."""

    model_config = ConfigDict(extra="allow")


class _StageRow(_Shape):
    stage: str
    counters: dict[str, Any] = {}


class _RunSummary(_Shape):
    pipeline: str
    accounting: str
    rejected_by_reason: dict[str, int] = {}
    stages: list[_StageRow] = []


class _MixTask(_Shape):
    target_share: float
    realised_share: float
    train_cuts: int
    dev_cuts: int
    test_cuts: int
    speaker_disjoint: bool
    note: str = ""


class _MixSummary(_Shape):
    tasks: dict[str, _MixTask] = {}
    rejected_by_reason: dict[str, int] = {}
    unit: str = "cuts"


class _ExportSummary(_Shape):
    format: str = "?"
    rejected_by_reason: dict[str, int] | None = None


SHAPES: dict[str, type[_Shape]] = {"run": _RunSummary, "mix": _MixSummary, "export": _ExportSummary}


def kind_of(path: Path) -> tuple[str, dict[str, Any]] | None:
    """(kind, summary) of a run, mix or export folder; None for a folder without summary.json.
    A summary.json that is there but unusable (not JSON, empty, a list, the wrong shape) is a
    SummaryError naming it: skipping it would leave that folder out of the report silently."""
    file = path / "summary.json"
    if not file.is_file():
        return None
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SummaryError(f"{file}: cannot be read ({e})") from None
    if not text.strip():
        raise SummaryError(f"{file} is empty; re-run the command that wrote it")
    try:
        summary = json.loads(text)
    except json.JSONDecodeError as e:
        raise SummaryError(
            f"{file}: not valid JSON ({e.msg}, line {e.lineno}); re-run the command that wrote it"
        ) from None
    if not isinstance(summary, dict):
        raise SummaryError(
            f"{file}: holds a JSON {type(summary).__name__}, not the summary of a run, mix or export"
        )
    if summary.get("type") in ("mix", "export"):
        kind = summary["type"]
    elif "pipeline" in summary:
        kind = "run"
    else:
        raise SummaryError(f"{file}: not the summary of a run, mix or export (no 'pipeline' or 'type' key)")
    try:
        SHAPES[kind].model_validate(summary)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(x) for x in err["loc"]) or "?"
        raise SummaryError(f"{file}: {kind} summary with a bad {key!r}: {err['msg']}") from None
    return kind, summary


KIND_ORDER = {"mix": 0, "run": 1, "export": 2}


def find_sections(root: Path) -> list[tuple[str, Path, dict[str, Any]]]:
    """The folder itself if it is a run, mix or export; else those found up to two levels below
    (mixes first, then runs, then exports)."""
    root = Path(root)
    found = kind_of(root)
    if found:
        return [(found[0], root, found[1])]
    out = []
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        k = kind_of(child)
        if k:
            out.append((k[0], child, k[1]))
            continue
        for grand in sorted(p for p in child.iterdir() if p.is_dir()) if child.name != "run" else ():
            k = kind_of(grand)
            if k and grand.name != "run":
                out.append((k[0], grand, k[1]))
    return sorted(out, key=lambda s: (KIND_ORDER[s[0]], str(s[1])))


def cut_files(kind: str, path: Path) -> list[Path]:
    """The cuts a section describes: a run's output, a mix's training Shar, an export's kept cuts."""
    if kind == "run":
        return [path / "cuts.jsonl.gz"]
    if kind == "mix":
        return sorted((path / "train").glob("cuts.*.jsonl.gz"))
    return [path / "run" / "cuts.jsonl.gz"] if (path / "run" / "cuts.jsonl.gz").exists() else []


def task_of(d: dict[str, Any]) -> str:
    custom = d.get("custom") or {}
    return str((custom.get("mix") or {}).get("task") or custom.get("task") or "untemplated")


def labels_of(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(field, value, label source) for every label the cut's supervision carries."""
    sups = d.get("supervisions") or []
    if not sups:
        return []
    sup = sups[0]
    custom = sup.get("custom") or {}
    sources = custom.get("label_source") or {}
    out = []
    for f in LABEL_FIELDS:
        value = sup.get("gender") if f == "gender" else custom.get(f)
        source = sources.get(f, "unknown") if isinstance(sources, dict) else str(sources)
        for v in value if isinstance(value, list) else [value]:
            if v not in (None, "", []) and isinstance(v, str | int | float):
                out.append((f, str(v), str(source)))
    return out


def snr_of(augment: Any) -> float | None:
    """The SNR an augmented cut was mixed at: `custom.augment.snr` (or `snr_db`), or that of its
    noise step (`custom.augment.noise.snr_db`, as the augment stage records it)."""
    if not isinstance(augment, dict):
        return None
    for holder in (augment, *(v for v in augment.values() if isinstance(v, dict))):
        for key in ("snr", "snr_db"):
            value = holder.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
    return None


def collect(kind: str, path: Path, summary: dict[str, Any]) -> Section:
    title = {
        "run": f"Pipeline run '{summary.get('pipeline', path.name)}'",
        "mix": f"Mix '{summary.get('name', path.name)}'",
        "export": f"Export ({summary.get('format', '?')})",
    }[kind]
    s = Section(kind=kind, path=path, title=f"{title}: {path}", summary=summary)
    for f in cut_files(kind, path):
        if f.exists():
            _collect_file(s, f)
    return s


def _cuts_of(f: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, cut dict) of a manifest; a file or line the report cannot read is a
    SummaryError naming the file, the line and why (not a bare EOFError or ValueError)."""
    number = 0
    try:
        with open_manifest(f, "rb") as lines:
            for number, raw in enumerate(lines, 1):  # noqa: B007 (read after the loop)
                if not raw.strip():
                    continue
                try:
                    d = loads_line(raw.decode("utf-8"))
                except UnicodeDecodeError as e:
                    raise SummaryError(f"{f}:{number}: not UTF-8 ({e.reason} at byte {e.start})") from None
                except json.JSONDecodeError as e:
                    raise SummaryError(f"{f}:{number}: not a JSON cut ({e.msg})") from None
                if not isinstance(d, dict):
                    raise SummaryError(f"{f}:{number}: a JSON {type(d).__name__}, not a cut")
                yield number, d
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        what = "truncated" if isinstance(e, EOFError) else "not a readable gzip file"
        raise SummaryError(f"{f} is {what} (after line {number}): re-run the command that wrote it") from None


def _number(f: Path, number: int, d: dict[str, Any], key: str) -> float:
    value = d.get(key) or 0.0
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = math.nan
    if isinstance(value, bool) or not math.isfinite(out) or out < 0:
        raise SummaryError(f"{f}:{number}: cut {d.get('id')!r} has {key} {value!r}, not a number of seconds")
    return out


def _collect_file(s: Section, f: Path) -> None:
    for number, d in _cuts_of(f):
        s.cuts += 1
        duration = _number(f, number, d, "duration")
        task = task_of(d)
        s.hours_by_task[task] += duration / 3600
        counts = s.durations.setdefault(task, np.zeros(len(DURATION_BINS) - 1, dtype=np.int64))
        counts[min(np.searchsorted(DURATION_BINS, duration, side="right") - 1, len(counts) - 1)] += 1
        for field_, value, source in labels_of(d):
            s.hours_by_label[f"{field_}:{value}"] += duration / 3600
            s.label_sources[(field_, value, source)] += 1
        snr = snr_of((d.get("custom") or {}).get("augment"))
        if snr is not None:
            s.snr_values += 1
            i = np.searchsorted(SNR_BINS, snr, side="right") - 1
            if 0 <= i < len(s.snr):
                s.snr[i] += 1
            else:
                s.snr_out_of_range += 1
