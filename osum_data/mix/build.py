"""`osum-data mix`: a weighted multi-task training set as Lhotse Shar, with per-task dev/test sets.

Steps (each streaming; see plan.py for what is kept per cut):

1. scan every dataset manifest (validity, speakers, durations); rejects go to `DIR/rejects.jsonl.gz`;
2. drop exact duplicates (same audio lineage, task key and target; the first is kept), group every
   cut of every task by shared lineage keys and speakers, assign whole groups to train/dev/test for
   all tasks at once (osum_data.mix.groups), and size every dataset (task shares, optional
   temperature, dataset repeat/subsample factors);
3. write the split manifests `DIR/plan/<split>/<task>/<dataset>.jsonl.gz` (ids prefixed by the dataset,
   `custom.mix` = task, dataset, split, source id);
4. build the training stream with lhotse's lazy CutSet ops: `repeat` for whole copies, `filter` for the
   fixed remainder subset, `mux` across datasets weighted by their planned counts, `shuffle` with a
   bounded buffer;
5. write Shar: `audio: none` with lhotse's SharWriter in this process (fields only, recordings
   referencing the source audio); `audio: flac` through the pipeline runner (the `shar_write` stage
   on Ray workers, resumable), gathered into `DIR/train/`, `DIR/dev/<task>/`, `DIR/test/<task>/`.

`DIR/summary.json` holds the target and realised share of every task, the split sizes, whether each
task's split is speaker-disjoint, the duplicates and the rejects by reason; at the end the mix is
audited (`DIR/audit.json`, osum_data.audit).
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from lhotse import CutSet
from lhotse.cut import Cut

from osum_data.export.engine import RUN_DIR, clashing_input, concat_files, run_stage, zero_gzip_mtime
from osum_data.export.mix_folder import PLAN_DIR, mix_manifest, subsample_draw
from osum_data.export.shar import SharWrite, gather_shar
from osum_data.manifest_io import atomic_path, open_jsonl_writer, read_jsonl, write_jsonl
from osum_data.mix.config import MixConfig
from osum_data.mix.plan import (
    DEV,
    SPLITS,
    TEST,
    TRAIN,
    DatasetPlan,
    LineageGraph,
    MixError,
    TaskPlan,
    plan_summary,
    scan_dataset,
    size_datasets,
    split_all,
    write_splits,
)
from osum_data.tasks import registry

SHAR_GROUPS = ("train", "dev", "test")


@dataclass
class MixResult:
    summary: dict[str, Any]
    output_dir: Path
    audit: Any = None  # osum_data.audit.AuditResult of the written mix


class _Remainder:
    """Keeps the train cuts whose subsample draw falls under the dataset's threshold (the same
    draw the plan sized the remainder with)."""

    def __init__(self, seed: int, dataset: str, threshold: int):
        self.seed, self.dataset, self.threshold = seed, dataset, threshold

    def __call__(self, cut: Cut) -> bool:
        return subsample_draw(self.seed, self.dataset, cut.custom["mix"]["source_id"]) < self.threshold


class _Suffix:
    def __init__(self, suffix: str):
        self.suffix = suffix

    def __call__(self, cut_id: str) -> str:
        return cut_id + self.suffix


def dataset_stream(d: DatasetPlan, root: Path, seed: int) -> CutSet | None:
    """The dataset's training copies: `repeats` whole copies (ids `_repeatN` from the 2nd on) plus
    the fixed remainder subset (id suffix `_repeat<repeats>` when it is an extra copy)."""
    base = CutSet.from_jsonl_lazy(d.plan_path(root, TRAIN))
    parts = []
    if d.repeats == 1:
        parts.append(base)
    elif d.repeats > 1:
        parts.append(base.repeat(times=d.repeats))
    if d.extra_cuts:
        extra = base.filter(_Remainder(seed, d.name, d.threshold))
        parts.append(extra.modify_ids(_Suffix(f"_repeat{d.repeats}")) if d.repeats else extra)
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out = out + p
    return out


def training_stream(tasks: list[TaskPlan], root: Path, cfg: MixConfig) -> CutSet:
    """All datasets multiplexed by their planned counts (so every task is spread evenly over the
    stream), then shuffled with a bounded buffer: lazy, memory flat in the corpus size."""
    streams, weights = [], []
    for t in tasks:
        for d in t.datasets:
            s = dataset_stream(d, root, cfg.seed)
            if s is not None and d.out_cuts:
                streams.append(s)
                weights.append(d.out_cuts)
    if not streams:
        raise MixError("the mix is empty: every task weighs 0 or has no training cuts")
    mixed = streams[0] if len(streams) == 1 else CutSet.mux(*streams, weights=weights, seed=cfg.seed)
    if cfg.shuffle_buffer > 1:
        mixed = mixed.shuffle(rng=random.Random(cfg.seed), buffer_size=cfg.shuffle_buffer)
    return mixed


def held_out_stream(task: TaskPlan, root: Path, which: int) -> CutSet | None:
    sets = [CutSet.from_jsonl_lazy(d.plan_path(root, which)) for d in task.datasets if d.split_count(which)]
    if not sets:
        return None
    out = sets[0]
    for s in sets[1:]:
        out = out + s
    return out


def _ordered_streams(tasks: list[TaskPlan], root: Path, cfg: MixConfig) -> Iterator[tuple[str, CutSet]]:
    """(Shar group, stream): the training set, then every task's dev and test sets."""
    yield "train", training_stream(tasks, root, cfg)
    for which in (DEV, TEST):
        for t in tasks:
            s = held_out_stream(t, root, which)
            if s is not None:
                yield f"{SPLITS[which]}/{t.name}", s


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MixError(
                f"output folder {out} is in use by another mix; wait or choose another --output"
            ) from None
        yield
    finally:
        os.close(fd)


def build_mix(
    cfg: MixConfig,
    output_dir: str | Path,
    workers: int | None = None,
    address: str | None = None,
    progress: bool = True,
) -> MixResult:
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise MixError(f"--output {out} is a file; give a folder")
    for task, entry in cfg.tasks.items():
        for ds in entry.datasets:
            folder = clashing_input(out, [ds.path().parent])
            if folder is not None:
                raise MixError(
                    f"--output {out} is (or holds) {folder}, the folder of task {task!r} dataset "
                    f"{ds.name!r}: the mix would overwrite its files; choose another --output"
                )
    with _locked(out):
        return _build(cfg, out, workers, address, progress)


def _build(cfg: MixConfig, out: Path, workers: int | None, address: str | None, progress: bool) -> MixResult:
    def say(msg: str) -> None:
        if progress:
            print(f"[mix] {msg}", file=sys.stderr)

    timings: dict[str, float] = {}  # seconds per phase, in summary.json
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        timings[name] = round(now - clock[0], 3)
        clock[0] = now

    tasks = [
        TaskPlan(
            name, entry.weight, [DatasetPlan(name, ds.name, ds.path(), ds.weight) for ds in entry.datasets]
        )
        for name, entry in cfg.tasks.items()
    ]
    # One manifest may feed several tasks (a pipeline writing samples of two task keys): each task
    # takes its own samples, and the others' are theirs, not rejects.
    by_path: dict[Path, list[DatasetPlan]] = {}
    for t in tasks:
        for d in t.datasets:
            by_path.setdefault(d.path.resolve(), []).append(d)
    for group in by_path.values():
        for d in group:
            others = {o.task for o in group if o.task != d.task}
            d.elsewhere_keys = frozenset(k for o in others for k in registry().task(o).keys)
    shutil.rmtree(out / PLAN_DIR, ignore_errors=True)
    graph = LineageGraph()
    names = [d.name for t in tasks for d in t.datasets]
    with open_jsonl_writer(out / "rejects.jsonl.gz") as rejects:
        for t in tasks:
            for d in t.datasets:
                scan_dataset(d, cfg.seed, rejects, graph)
                say(
                    f"{t.name}/{d.name}: {d.lines} lines, {d.valid} task samples, "
                    f"{sum(d.rejected.values())} rejected"
                )
        lap("scan")
        shared = split_all(tasks, cfg, graph)
        del graph
        for t in tasks:
            for d in t.datasets:
                if d.duplicates:
                    say(f"{t.name}/{d.name}: {d.duplicates} duplicate(s) of earlier samples dropped")
            for why in t.short.values():
                say(f"{t.name}: {why}")
        size_datasets(tasks, cfg, out / "rejects.jsonl.gz")
    with open_jsonl_writer(out / "duplicates.jsonl.gz") as duplicates:
        for t in tasks:
            for d in t.datasets:
                write_splits(d, out, duplicates, names)
    with atomic_path(out / "mix.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), allow_unicode=True, sort_keys=False))
    lap("split")

    run_summary: dict[str, Any] | None = None
    if cfg.audio == "none":
        shards = _write_fields_only(tasks, out, cfg)
        lap("shar")
    else:
        shards, run_summary = _write_with_audio(tasks, out, cfg, workers, address, progress, lap)
    summary = _summary(cfg, tasks, out, shards, run_summary)
    summary["speakers_not_held_out"] = shared  # voices of tasks with < splits.min_speakers speakers
    lap("summary")
    summary["timings"] = timings
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    say(f"wrote {out}/train ({summary['out']} cuts, {summary['hours_out']:.3f} h) and per-task dev/test sets")
    from osum_data.audit import audit

    result = audit(out)  # writes audit.json next to summary.json
    lap("audit")
    summary["timings"] = timings
    summary["audit"] = result.brief()
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return MixResult(summary=summary, output_dir=out, audit=result)


def _clear_shar(out: Path) -> None:
    for g in SHAR_GROUPS:
        shutil.rmtree(out / g, ignore_errors=True)


def _write_fields_only(tasks: list[TaskPlan], out: Path, cfg: MixConfig) -> dict[str, int]:
    """Shar without audio: each cut's recording keeps pointing at its source (lhotse's writer)."""
    from lhotse.shar import SharWriter

    staging = out / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    shards: dict[str, int] = {}
    for group, stream in _ordered_streams(tasks, out, cfg):
        (staging / group).mkdir(parents=True, exist_ok=True)
        with SharWriter(staging / group, fields={}, shard_size=cfg.shard_size, warn_unused_fields=False) as w:
            for cut in stream:
                w.write(cut)
        shards[group] = len(w.output_paths["cuts"])
        for f in w.output_paths["cuts"]:
            zero_gzip_mtime(Path(f))
    _clear_shar(out)
    for g in SHAR_GROUPS:
        if (staging / g).exists():
            os.replace(staging / g, out / g)
    shutil.rmtree(staging, ignore_errors=True)
    # The same cuts as one manifest (for `osum-data export` of the mix): a byte copy of the gzip shards.

    order = [g for g, _ in sorted(shards.items(), key=lambda kv: (kv[0] != "train", kv[0]))]
    concat_files([f for g in order for f in sorted((out / g).glob("cuts.*.jsonl.gz"))], mix_manifest(out))
    return shards


def _write_with_audio(
    tasks: list[TaskPlan],
    out: Path,
    cfg: MixConfig,
    workers: int | None,
    address: str | None,
    progress: bool,
    lap=lambda name: None,
) -> tuple[dict[str, int], dict[str, Any]]:
    """The plan manifest (train stream, then dev/test) through the `shar_write` stage on Ray."""
    plan = mix_manifest(out)
    write_jsonl(plan, (c.to_dict() for _, s in _ordered_streams(tasks, out, cfg) for c in s))
    lap("stream")
    result = run_stage(
        SharWrite,
        {"sampling_rate": cfg.sampling_rate, "format": cfg.audio},
        plan,
        out / RUN_DIR,
        name=f"mix-{cfg.name}",
        shard_size=cfg.shard_size,
        seed=cfg.seed,
        workers=workers,
        address=address,
        progress=progress,
    )
    lap("shar")
    _clear_shar(out)
    shards = gather_shar(out / RUN_DIR, result.summary["shards"], out, kept=result.summary["out"])
    lap("gather")
    return shards, result.summary


def _count_group(path: Path) -> tuple[Counter, dict[str, float], int]:
    """Cuts and hours per task in one Shar folder (its cuts files only)."""
    cuts: Counter = Counter()
    hours: dict[str, float] = defaultdict(float)
    files = sorted(path.glob("cuts.*.jsonl.gz"))
    for f in files:
        for d in read_jsonl(f):
            task = ((d.get("custom") or {}).get("mix") or {}).get("task", "?")
            cuts[task] += 1
            hours[task] += float(d.get("duration", 0.0)) / 3600
    return cuts, hours, len(files)


def _summary(
    cfg: MixConfig, tasks: list[TaskPlan], out: Path, shards: dict[str, int], run: dict[str, Any] | None
) -> dict[str, Any]:
    train_cuts, train_hours, _ = _count_group(out / "train")
    n_train = sum(train_cuts.values())
    h_train = sum(train_hours.values())
    per_task = plan_summary(tasks, cfg)
    held: dict[str, dict[str, int]] = {}
    for t in tasks:
        for which in ("dev", "test"):
            c, _, _ = _count_group(out / which / t.name)
            held.setdefault(t.name, {})[which] = sum(c.values())
        realised = (
            train_hours[t.name] / h_train if cfg.unit == "hours" else train_cuts[t.name] / max(1, n_train)
        )
        per_task[t.name].update(
            train_cuts=train_cuts[t.name],
            train_hours=round(train_hours[t.name], 6),
            realised_share=round(realised if n_train else 0.0, 6),
            dev_cuts=held[t.name]["dev"],
            test_cuts=held[t.name]["test"],
        )
    rejected = Counter()
    lines = 0
    for t in tasks:
        for d in t.datasets:
            lines += d.lines
            for code, n in d.rejected.items():
                rejected[f"scan:{code}"] += n
    duplicates = sum(d.duplicates for t in tasks for d in t.datasets)
    if run is not None:
        for reason, n in run.get("rejected_by_reason", {}).items():
            rejected[reason] += n
    unique = sum(d.unique for t in tasks for d in t.datasets)
    # lines read more than once (one manifest in several tasks) count once, in the task that used them
    lines -= sum(d.elsewhere for t in tasks for d in t.datasets)
    return {
        "type": "mix",
        "name": cfg.name,
        "config_digest": cfg.digest(),
        "seed": cfg.seed,
        "unit": cfg.unit,
        "temperature": cfg.temperature,
        "audio": cfg.audio,
        "in": lines,
        "unique": unique,
        "rejected": sum(rejected.values()),  # bad lines; duplicates are counted apart
        "accounting": (
            f"in {lines} = task samples {unique} + duplicates {duplicates} "
            f"+ rejected {lines - unique - duplicates}"
        ),
        "rejected_by_reason": dict(sorted(rejected.items())),
        "duplicates": {
            "removed": duplicates,
            "by_reason": {"same_audio_task_target": duplicates} if duplicates else {},
            "by_dataset": {d.name: d.duplicates for t in tasks for d in t.datasets if d.duplicates},
            "kept": "first occurrence (datasets in config order, lines in file order)",
            "file": str(out / "duplicates.jsonl.gz"),
        },
        "out": n_train,
        "hours_out": round(h_train, 6),
        "cuts_by_task": dict(sorted(train_cuts.items())),
        "hours_by_task": {k: round(v, 6) for k, v in sorted(train_hours.items())},
        "shar_shards": shards,
        "tasks": per_task,
        "layout": {
            "train": str(out / "train"),
            "dev": {t.name: str(out / "dev" / t.name) for t in tasks if held[t.name]["dev"]},
            "test": {t.name: str(out / "test" / t.name) for t in tasks if held[t.name]["test"]},
        },
    }
