"""Deciding a mix: scan the task manifests, group every cut by what it is made of, carve dev/test
sets that share nothing with train, size every dataset.

One streaming pass per dataset reads each line once and keeps, per cut, a few numbers in arrays
(speaker index, subsample draw, duration, sample key) plus the 8-byte hashes of its lineage keys
(osum_data.mix.lineage) in one graph for the whole mix; nothing else grows with the corpus. Then,
for all tasks together (osum_data.mix.groups): exact duplicates (same audio, task key and target) are
dropped, the first occurrence kept; cuts are grouped by shared lineage keys and speakers, and whole
groups fill each task's dev and test sets. A second pass writes each dataset's cuts, split and tagged,
to `plan/<split>/<task>/<dataset>.jsonl.gz` using those arrays by position, so both passes agree by
construction.

Every random choice is a hash of (seed, salt, an id or key), never a generator's state: the same seed
gives the same splits and the same subsample on any machine, in any order.
"""

from __future__ import annotations

import hashlib
import json
import math
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from osum_data.errors import EXIT_RUNTIME, UsageError
from osum_data.export.mix_folder import SPLITS, U32, mixed_id, plan_path, subsample_draw
from osum_data.manifest_io import (
    JSONTooDeep,
    ManifestReadError,
    dumps,
    loads_line,
    open_jsonl_writer,
    read_lines,
)
from osum_data.mix import groups
from osum_data.mix.config import MixConfig
from osum_data.mix.groups import DEV, DROP, SPEAKER, TEST, TRAIN, LineageGraph, Targets, graph_key
from osum_data.mix.lineage import lineage, sample_key, speaker
from osum_data.rejects import Reject, placeholder_record, reject_record
from osum_data.sources import ID_CODE, id_problem, source_problem
from osum_data.tasks import registry

__all__ = ["SPLITS", "MixError", "MixReadError", "mixed_id"]

STAGE = "mix"
DUPLICATE = "duplicate"  # reject code: same audio lineage, task key and target as an earlier cut
ELSEWHERE = "other_task_of_the_mix"  # a sample of another task that reads the same manifest


class MixError(UsageError):
    """A mix that cannot be built as configured (one line for the user; exit code 2)."""


class MixReadError(MixError):
    """A manifest of the mix that cannot be read to its end: the data failed, not the config."""

    exit_code = EXIT_RUNTIME


@dataclass
class DatasetPlan:
    task: str
    name: str
    path: Path
    weight: float
    lines: int = 0
    rejected: Counter = field(default_factory=Counter)
    speakers: list[str] = field(default_factory=list)
    speaker_cuts: Counter = field(default_factory=Counter)  # speaker index -> cuts
    # Per valid cut, in file order (numpy after the scan).
    spk: Any = field(default_factory=lambda: array("i"))  # speaker index, -1 unknown
    draw: Any = field(default_factory=lambda: array("I"))  # subsample draw of the cut
    dur: Any = field(default_factory=lambda: array("f"))
    sample: Any = field(default_factory=lambda: array("Q"))  # sample key (duplicates), dropped after
    offset: int = 0  # global index (in the mix's lineage graph) of the first valid cut
    split: Any = None  # np.uint8 per valid cut, after the split decision (DROP: a duplicate)
    dup_of: Any = None  # np.int16 per valid cut: dataset index of the kept first occurrence, -1
    elsewhere_keys: frozenset[str] = frozenset()  # keys of the other mix tasks reading this manifest
    elsewhere: int = 0  # cuts of those tasks: theirs, neither used here nor rejected
    factor: float = 0.0  # effective repeat factor of the train cuts
    repeats: int = 0  # whole copies
    threshold: int = 0  # remainder: train cuts with draw < threshold get one more copy
    extra_cuts: int = 0
    extra_hours: float = 0.0

    @property
    def valid(self) -> int:
        """Task samples read (duplicates included)."""
        return len(self.dur)

    @property
    def duplicates(self) -> int:
        return self.split_count(DROP) if self.split is not None else 0

    @property
    def unique(self) -> int:
        """Task samples kept: valid and not a duplicate of an earlier one."""
        return self.valid - self.duplicates

    def split_count(self, which: int) -> int:
        return int(np.count_nonzero(self.split == which))

    def split_hours(self, which: int) -> float:
        return float(self.dur[self.split == which].sum(dtype=np.float64)) / 3600

    @property
    def train_cuts(self) -> int:
        return self.split_count(TRAIN)

    @property
    def train_hours(self) -> float:
        return self.split_hours(TRAIN)

    @property
    def out_cuts(self) -> int:
        return self.repeats * self.train_cuts + self.extra_cuts

    @property
    def out_hours(self) -> float:
        return self.repeats * self.train_hours + self.extra_hours

    def plan_path(self, root: Path, split: int) -> Path:
        return plan_path(root, SPLITS[split], self.task, self.name)


@dataclass
class TaskPlan:
    name: str
    weight: float
    datasets: list[DatasetPlan]
    share: float = 0.0  # target share of the training set
    speaker_mode: bool = False
    speakers: int = 0
    note: str = ""
    targets: dict[str, int] = field(default_factory=dict)
    short: dict[str, str] = field(default_factory=dict)  # split -> why it holds fewer than wanted
    groups: int = 0  # lineage/speaker groups holding the task's cuts
    largest_group: int = 0  # the task's cuts in its largest group


def scan_dataset(ds: DatasetPlan, seed: int, rejects, graph: LineageGraph | None = None) -> None:
    """Read one manifest: validate each line, keep the per-cut numbers and lineage keys, write
    rejects."""
    graph = graph if graph is not None else LineageGraph()
    ds.offset = graph.n
    keys = set(registry().task(ds.task).keys)
    spk_index: dict[str, int] = {}
    if not ds.path.is_file():
        raise MixError(f"task {ds.task!r}, dataset {ds.name!r}: manifest not found: {ds.path}")
    ids = array("Q")  # 8 bytes per cut, dropped after the duplicate check
    for number, line in _lines(ds.path):
        ds.lines += 1
        d, reject = _parse(number, line, keys, ds)
        if reject is not None and reject.code == ELSEWHERE:
            ds.elsewhere += 1
            continue
        if reject is not None:
            ds.rejected[reject.code] += 1
            rec = (
                reject_record(d, STAGE, reject)
                if isinstance(d, dict) and isinstance(d.get("id"), str)
                else placeholder_record(
                    f"{ds.name}-line-{number}",
                    STAGE,
                    reject,
                    input_line=number,
                    raw=line.decode("utf-8", "replace")[:2000],
                )
            )
            rejects.write(dumps(rec) + "\n")
            continue
        spk = speaker(d)
        if spk is None:
            ds.spk.append(-1)
        else:
            i = spk_index.setdefault(spk, len(spk_index))
            ds.speaker_cuts[i] += 1
            ds.spk.append(i)
        graph.add(lineage(d))
        ds.sample.append(sample_key(d))
        ds.draw.append(subsample_draw(seed, ds.name, d["id"]))
        ds.dur.append(float(d["duration"]))
        ids.append(int.from_bytes(hashlib.blake2b(d["id"].encode(), digest_size=8).digest(), "little"))
    _check_duplicates(ds, ids)
    ds.speakers = list(spk_index)
    ds.spk = np.frombuffer(ds.spk, dtype=np.int32) if len(ds.spk) else np.zeros(0, np.int32)
    ds.sample = np.frombuffer(ds.sample, dtype=np.uint64) if len(ds.sample) else np.zeros(0, np.uint64)
    ds.draw = np.frombuffer(ds.draw, dtype=np.uint32) if len(ds.draw) else np.zeros(0, np.uint32)
    ds.dur = np.frombuffer(ds.dur, dtype=np.float32) if len(ds.dur) else np.zeros(0, np.float32)


def _lines(path: Path):
    """(1-based line number, line bytes) of the non-blank lines; a broken gzip file is a MixReadError."""
    try:
        yield from read_lines(path)
    except ManifestReadError as e:
        raise MixReadError(str(e)) from None


def _parse(number: int, line: bytes, keys: set[str], ds: DatasetPlan) -> tuple[Any, Reject | None]:
    """(cut dict, None) for a usable task sample, else (what was read, the Reject)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, Reject("not_utf8", f"{ds.path}:{number}: not UTF-8 ({e.reason} at byte {e.start})")
    try:
        d = loads_line(text)
    except JSONTooDeep as e:
        return None, Reject(e.code, f"{ds.path}:{number}: JSON {e.msg}")
    except json.JSONDecodeError as e:
        return None, Reject("bad_json", f"{ds.path}:{number}: not JSON ({e})")
    return d, _check(d, keys, ds, number)


def _check(d: Any, keys: set[str], ds: DatasetPlan, number: int) -> Reject | None:
    where = f"{ds.path}:{number}"
    if not isinstance(d, dict) or not isinstance(d.get("id"), str) or not d["id"]:
        return Reject("not_a_cut", f"{where}: not a cut (no string id)")
    why = id_problem(d["id"])
    if why is not None:
        return Reject(ID_CODE, f"{where}: {why}")
    unsafe = source_problem(d)  # before anything decodes it (the Shar writer, the trainer)
    if unsafe is not None:
        return Reject(unsafe[0], f"{where}: cut {d['id']!r}: {unsafe[1]}")
    try:
        duration = float(d.get("duration"))
    except (TypeError, ValueError):
        return Reject("not_a_cut", f"{where}: cut {d['id']!r} has no duration")
    if not duration > 0 or not math.isfinite(duration):
        return Reject("bad_duration", f"{where}: cut {d['id']!r} has duration {duration}")
    custom = d.get("custom") or {}
    task = custom.get("task")
    if not task or not custom.get("target"):
        return Reject(
            "not_a_task_sample", f"{where}: cut {d['id']!r} has no custom.task/target (run a task pipeline)"
        )
    if task not in keys and task in ds.elsewhere_keys:
        return Reject(ELSEWHERE)
    if task not in keys:
        return Reject("wrong_task", f"{where}: cut {d['id']!r} is {task!r}, not a sample of task {ds.task!r}")
    return None


def _check_duplicates(ds: DatasetPlan, ids: array) -> None:
    """Ids must be unique within a dataset (pipeline outputs are): a repeated id would train twice
    and collide in the Shar tars."""
    if not len(ids):
        return
    _, counts = np.unique(np.frombuffer(ids, dtype=np.uint64), return_counts=True)
    if (counts > 1).any():
        raise MixError(
            f"task {ds.task!r}, dataset {ds.name!r}: {int((counts > 1).sum())} cut id(s) occur more than "
            f"once in {ds.path}; ids must be unique within a dataset (pipeline outputs are)"
        )


def _valid_lines(ds: DatasetPlan):
    """(position among valid cuts, cut dict) for the lines the scan kept, in file order."""
    keys = set(registry().task(ds.task).keys)
    pos = 0
    for number, line in _lines(ds.path):
        d, reason = _parse(number, line, keys, ds)
        if reason is None:
            yield pos, d
            pos += 1


# --- splits ----------------------------------------------------------------------------------


def _targets(n: int, cfg: MixConfig) -> dict[str, int]:
    s = cfg.splits
    targets = {}
    for name, frac in (("test", s.test), ("dev", s.dev)):
        want = round(frac * n) if frac > 0 else 0
        if frac > 0 and n >= 4 * max(1, s.min_cuts):
            want = max(want, s.min_cuts)
        targets[name] = min(want, s.max_cuts)
    return targets


def split_all(tasks: list[TaskPlan], cfg: MixConfig, graph: LineageGraph) -> list[str]:
    """Drop duplicates, group every cut of every task by lineage and speaker, and assign whole groups
    to train/dev/test (osum_data.mix.groups).

    Speakers: a task with at least `splits.min_speakers` known speakers is speaker-disjoint, its
    speakers are group keys across the whole mix. The speakers of a task with fewer (one voice: no
    speaker-disjoint split exists) are not group keys; their cuts are grouped by lineage only, and
    where such a speaker also speaks in a speaker-disjoint task, the groups holding those cuts stay in
    train (so that task's dev/test still shares no speaker with its train). Returns those speakers
    (they may be on both sides of the line, which the summary declares and the audit reports)."""
    datasets = [d for t in tasks for d in t.datasets]
    # 1. duplicates: the first occurrence of each sample key, in config and file order
    keys = np.concatenate([d.sample for d in datasets]) if datasets else np.zeros(0, np.uint64)
    first = groups.first_occurrences(keys)
    starts = np.cumsum([0] + [d.valid for d in datasets])
    for i, d in enumerate(datasets):
        f = first[starts[i] : starts[i + 1]]
        dup = f != np.arange(starts[i], starts[i + 1])
        d.split = np.where(dup, DROP, TRAIN).astype(np.uint8)
        d.dup_of = np.full(d.valid, -1, np.int16)
        if dup.any():
            d.dup_of[dup] = np.searchsorted(starts, f[dup], side="right") - 1
        d.sample = None  # 8 bytes per cut no longer needed
    # 2. speakers: which tasks can be speaker-disjoint, which speakers are group keys
    s = cfg.splits
    task_speakers: list[set[str]] = []
    for t in tasks:
        names = {d.speakers[i] for d in t.datasets for i, c in d.speaker_cuts.items() if c}
        task_speakers.append(names)
        t.speakers = len(names)
        t.speaker_mode = t.speakers >= s.min_speakers
    shared = set().union(*(n for t, n in zip(tasks, task_speakers, strict=True) if not t.speaker_mode))
    edge_cuts = [np.frombuffer(graph.cuts, np.uint32) if graph.n else np.zeros(0, np.uint32)]
    edge_keys = [np.frombuffer(graph.keys, np.uint64) if graph.n else np.zeros(0, np.uint64)]
    pinned_cuts = []
    for t in tasks:
        for d in t.datasets:
            if not d.speakers:
                continue
            is_shared = np.array([n in shared for n in d.speakers], bool)
            hashes = np.array([graph_key(SPEAKER + n) for n in d.speakers], np.uint64)
            pos = np.flatnonzero((d.spk >= 0) & (d.split != DROP))
            group = pos[~is_shared[d.spk[pos]]]
            edge_cuts.append((d.offset + group).astype(np.uint32))
            edge_keys.append(hashes[d.spk[group]])
            if t.speaker_mode:
                pinned_cuts.append(d.offset + pos[is_shared[d.spk[pos]]])
    # duplicates take no part in the grouping
    drop = np.zeros(graph.n, bool)
    for d in datasets:
        drop[d.offset + np.flatnonzero(d.split == DROP)] = True
    cuts_all, keys_all = np.concatenate(edge_cuts), np.concatenate(edge_keys)
    keep = ~drop[cuts_all]
    labels, draws = groups.components(cuts_all[keep], keys_all[keep], graph.n, cfg.seed)
    pinned = np.zeros(len(draws), bool)
    if pinned_cuts:
        pinned[labels[np.concatenate(pinned_cuts)]] = True
    # 3. held-out sets: whole groups, for all tasks at once
    task_of = np.full(graph.n, -1, np.int64)
    for k, t in enumerate(tasks):
        for d in t.datasets:
            task_of[d.offset : d.offset + d.valid] = k
    n = [sum(d.unique for d in t.datasets) for t in tasks]
    for t, size in zip(tasks, n, strict=True):
        t.targets = _targets(size, cfg)
    want = {w: [t.targets[SPLITS[w]] for t in tasks] for w in (DEV, TEST)}
    split, got, stats = groups.assign(labels, task_of, draws, pinned, Targets(n, want, s.max_cuts))
    for k, t in enumerate(tasks):
        t.groups, t.largest_group, smallest = stats[k]
        for d in t.datasets:
            kept = d.split != DROP
            d.split[kept] = split[labels[d.offset : d.offset + d.valid][kept]]
        _notes(t, k, want, got, shared & task_speakers[k], n[k], smallest, s.max_cuts)
    return sorted(shared)


def _notes(
    t: TaskPlan,
    k: int,
    want: dict[int, list[int]],
    got: dict[int, list[int]],
    shared,
    n: int,
    smallest: int,
    cap: int,
) -> None:
    """What the summary and the terminal say about a task's split: why dev/test are short, and
    whether it is speaker-disjoint."""
    short = [w for w in (DEV, TEST) if got[w][k] < want[w][k]]
    for w in short:
        t.short[SPLITS[w]] = f"{SPLITS[w]} holds {got[w][k]} of {want[w][k]} wanted cuts"
    notes = []
    if not t.speaker_mode and t.speakers:
        notes.append(
            f"{t.speakers} known speaker(s) (< splits.min_speakers): dev/test are grouped by what the "
            "cuts are made of (recordings, clips) and share speakers with train"
        )
    elif t.speaker_mode and shared:
        notes.append(
            f"speaker(s) {', '.join(sorted(shared)[:3])} also speak in a task with too few speakers "
            "to hold them out: their cuts of this task stay in train"
        )
    if short:
        why = (
            f"splits.max_cuts={cap} is below the smallest group's {smallest} cuts"
            if smallest > cap
            else "no other group fits (or every other group holds speakers or sources it shares with train)"
        )
        notes.append(
            f"{' and '.join(t.short.values())}: the task's {n} cuts are in {t.groups} group(s) of cuts that "
            f"share recordings, clips or speakers (across all tasks), the largest {t.largest_group} cuts; "
            f"{why}; nothing is moved across to fill them"
        )
        t.short = {SPLITS[w]: f"{t.short[SPLITS[w]]}: {why}" for w in short}
    t.note = "; ".join(notes)


# --- sizes -----------------------------------------------------------------------------------


def size_datasets(tasks: list[TaskPlan], cfg: MixConfig, rejects: Path | None = None) -> None:
    """Task shares, then each dataset's repeat factor, realised exactly: whole copies plus the train
    cuts with the smallest subsample draws (cuts) or as many as reach the hours (hours).

    Shares are computed in log space, relative to the largest: any finite weight (1e308 included)
    and any positive temperature (0.001 included) give finite shares that sum to 1."""
    hours = cfg.unit == "hours"

    def size(d: DatasetPlan) -> float:
        return d.train_hours if hours else float(d.train_cuts)

    natural = {t.name: sum(d.weight * size(d) for d in t.datasets) for t in tasks}
    active = [t for t in tasks if t.weight > 0]
    for t in active:
        if natural[t.name] <= 0:
            raise MixError(_nothing_left(t, cfg, rejects))
    if cfg.temperature is None:
        log_raw = {t.name: math.log(t.weight) for t in active}
    else:
        log_raw = {t.name: math.log(t.weight) + math.log(natural[t.name]) for t in active}
    top = max(log_raw.values())
    temp = cfg.temperature or 1.0
    # (x - top) / T <= 0: exp never overflows; a tiny T sends the smaller tasks' shares towards 0.
    raw = {name: math.exp((v - top) / temp) for name, v in log_raw.items()}
    total_raw = sum(raw.values())
    total = cfg.total if cfg.total is not None else sum(natural[t.name] for t in active)
    for t in tasks:
        t.share = raw.get(t.name, 0.0) / total_raw
        scale = t.share * total / natural[t.name] if t.share > 0 else 0.0
        for d in t.datasets:
            d.factor = d.weight * scale
    check_bounds(tasks, cfg)
    for t in tasks:
        for d in t.datasets:
            _realise(d, hours)


def check_bounds(tasks: list[TaskPlan], cfg: MixConfig) -> None:
    """Refuse a plan that would repeat a dataset more than MAX_REPEAT times or write more than
    MAX_TOTAL training cuts, with the numbers and the key to change, before a cut is written."""
    from osum_data.mix.config import MAX_REPEAT, MAX_TOTAL

    planned = 0.0
    for t in tasks:
        for d in t.datasets:
            if d.factor > MAX_REPEAT:
                raise MixError(
                    f"task {t.name!r}, dataset {d.name!r} would repeat its {d.train_cuts} training cut(s) "
                    f"{d.factor:.3g} times (at most {MAX_REPEAT}); lower {_knobs(t, d, cfg)}, or give the "
                    "task more data"
                )
            planned += d.factor * d.train_cuts
    if planned > MAX_TOTAL:
        raise MixError(
            f"the mix would hold {planned:.3g} training cuts (at most {MAX_TOTAL:.0e}); lower "
            + ("`total` or " if cfg.total is not None else "")
            + "the dataset weights (tasks.<task>.datasets[].weight)"
        )


def _knobs(t: TaskPlan, d: DatasetPlan, cfg: MixConfig) -> str:
    """The keys that set a dataset's repeat factor, with their values."""
    i = next(k for k, x in enumerate(t.datasets) if x is d)
    knobs = [f"tasks.{t.name}.datasets.{i}.weight ({d.weight:g})"]
    if cfg.total is not None:
        knobs.insert(0, f"total ({cfg.total:g})")
    return " or ".join(knobs)


def _nothing_left(t: TaskPlan, cfg: MixConfig, rejects: Path | None) -> str:
    """Why a task has no training cuts: per dataset, lines read, rejected (main reason), held out."""
    parts = []
    for d in t.datasets:
        text = f"{d.name!r}: {d.lines} line(s)"
        n_rej = sum(d.rejected.values())
        if n_rej:
            code, n = d.rejected.most_common(1)[0]
            text += f", {n_rej} rejected (most: {code} {n})"
        if d.elsewhere:
            text += f", {d.elsewhere} sample(s) of the mix's other tasks"
        if d.duplicates:
            text += f", {d.duplicates} duplicate(s) of earlier samples"
        if d.valid:
            text += f", {d.split_count(DEV) + d.split_count(TEST)} held out for dev/test"
        if d.weight == 0:
            text += ", weight 0"
        parts.append(text)
    where = f"; rejects with their reasons: {rejects}" if rejects is not None else ""
    return f"task {t.name!r} has no training {cfg.unit} left ({'; '.join(parts)}){where}"


def _realise(d: DatasetPlan, hours: bool) -> None:
    d.repeats = math.floor(d.factor + 1e-9)
    rest = max(0.0, d.factor - d.repeats)
    train = d.split == TRAIN
    draws = np.sort(d.draw[train])
    if rest <= 0 or len(draws) == 0:
        d.threshold, d.extra_cuts, d.extra_hours = 0, 0, 0.0
        return
    if hours:
        order = np.argsort(d.draw[train], kind="stable")
        cum = np.cumsum(d.dur[train][order], dtype=np.float64)
        m = int(np.searchsorted(cum, rest * cum[-1]))
        # the nearer of m and m + 1 cuts to the wanted hours
        if m < len(cum) and (m == 0 or abs(cum[m] - rest * cum[-1]) < abs(cum[m - 1] - rest * cum[-1])):
            m += 1
    else:
        m = round(rest * len(draws))
    m = min(m, len(draws))
    d.threshold = U32 if m == len(draws) else int(draws[m])
    if m and m < len(draws) and draws[m - 1] == draws[m]:  # a tie at the cut: rare; keep it exact-ish
        d.threshold = int(draws[m - 1]) + 1
    kept = d.draw[train] < d.threshold
    d.extra_cuts = int(kept.sum())
    d.extra_hours = float(d.dur[train][kept].sum(dtype=np.float64)) / 3600


# --- writing the split manifests ---------------------------------------------------------------


def write_splits(d: DatasetPlan, root: Path, duplicates=None, names: list[str] | None = None) -> None:
    """Second pass: each valid cut, tagged with `custom.mix`, its dataset-prefixed id and its lineage
    keys (`custom.lineage`: what the audit checks, whatever the output format keeps of the recording),
    into the plan manifest of its split; duplicates into `duplicates` (as reject records, code
    `duplicate`), naming the dataset (`names[i]`) that holds the kept first occurrence."""
    paths = [d.plan_path(root, s) for s in (TRAIN, DEV, TEST)]
    writers = [open_jsonl_writer(p) for p in paths]
    handles = [w.__enter__() for w in writers]
    try:
        for pos, cut in _valid_lines(d):
            split = int(d.split[pos])
            if split == DROP:
                if duplicates is not None:
                    where = names[int(d.dup_of[pos])] if names else "an earlier dataset"
                    detail = (
                        f"cut {cut['id']!r} of dataset {d.name!r}: the same audio lineage, task key and "
                        f"target as a cut of dataset {where!r} (kept)"
                    )
                    rec = reject_record(cut, STAGE, Reject(DUPLICATE, detail))
                    duplicates.write(dumps(rec) + "\n")
                continue
            source = cut["id"]
            keys = sorted(lineage(cut))
            cut["id"] = mixed_id(d.name, source)
            custom = dict(cut.get("custom") or {})
            custom["lineage"] = keys
            custom["mix"] = {"task": d.task, "dataset": d.name, "split": SPLITS[split], "source_id": source}
            cut["custom"] = custom
            handles[split].write(dumps(cut) + "\n")
    except BaseException as e:
        for w in writers:
            w.__exit__(type(e), e, e.__traceback__)
        raise
    for w in writers:
        w.__exit__(None, None, None)


def plan_summary(tasks: list[TaskPlan], cfg: MixConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for t in tasks:
        out[t.name] = {
            "weight": t.weight,
            "target_share": round(t.share, 6),
            "speakers": t.speakers,
            "speaker_disjoint": t.speaker_mode,
            **({"note": t.note} if t.note else {}),
            "split_targets": t.targets,
            "groups": t.groups,
            "largest_group": t.largest_group,
            **({"split_short": t.short} if t.short else {}),
            "duplicates": sum(d.duplicates for d in t.datasets),
            "datasets": {
                d.name: {
                    "manifest": str(d.path),
                    "weight": d.weight,
                    "lines": d.lines,
                    "rejected": dict(d.rejected),
                    **({"samples_of_other_tasks": d.elsewhere} if d.elsewhere else {}),
                    "duplicates": d.duplicates,
                    "unique": {SPLITS[s]: d.split_count(s) for s in (TRAIN, DEV, TEST)},
                    "unique_hours": {SPLITS[s]: round(d.split_hours(s), 6) for s in (TRAIN, DEV, TEST)},
                    "factor": round(d.factor, 6),
                    "repeats": d.repeats,
                    "extra_cuts": d.extra_cuts,
                    "planned_cuts": d.out_cuts,
                    "planned_hours": round(d.out_hours, 6),
                }
                for d in t.datasets
            },
        }
    return out
