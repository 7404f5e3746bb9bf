"""Processing of one shard: the stage chain over a list of cuts, and the shard's files on disk.

This is what a Ray actor runs; it is also usable in a plain loop (the benchmarks do), which keeps
the runner a thin scheduler around it.
"""

from __future__ import annotations

import json
import traceback
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from lhotse.cut import Cut
from lhotse.serialization import deserialize_item

from osum_data.manifest_io import atomic_path, dumps, open_jsonl_writer, reject_record
from osum_data.run.config import PipelineConfig, build_config
from osum_data.run.stage import BatchFn, Reject, StageResult, get_stage

SHARD_DIR = "shards"
LABEL_FIELDS = ("gender", "age", "emotion", "style", "events")


def shard_paths(out_dir: Path, index: int) -> dict[str, Path]:
    d = Path(out_dir) / SHARD_DIR
    return {
        "cuts": d / f"cuts.{index:06d}.jsonl.gz",
        "rejects": d / f"rejects.{index:06d}.jsonl.gz",
        "done": d / f"done.{index:06d}.json",
    }


def read_done(out_dir: Path, index: int) -> dict[str, Any] | None:
    path = shard_paths(out_dir, index)["done"]
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _labels_of(cut: Cut) -> list[str]:
    """'field:value' for each label a sample carries, for the per-label hours of the summary."""
    if not cut.supervisions:
        return []
    sup = cut.supervisions[0]
    custom = sup.custom or {}
    out = []
    for f in LABEL_FIELDS:
        value = sup.gender if f == "gender" else custom.get(f)
        for v in value if isinstance(value, list) else [value]:
            if v:
                out.append(f"{f}:{v}")
    return out


class ShardProcessor:
    """The stage chain, built once (one model load per worker), applied shard after shard."""

    def __init__(self, config: PipelineConfig | dict[str, Any]):
        self.config = config if isinstance(config, PipelineConfig) else build_config(config)
        self.stages: list[tuple[str, BatchFn]] = [
            (s.name, get_stage(s.stage)(**s.params)) for s in self.config.stages
        ]

    def _apply(self, name: str, fn: BatchFn, cuts: list[Cut]) -> StageResult:
        try:
            return fn(cuts)
        except Exception:
            # One bad cut must not sink the batch: redo it cut by cut and reject the ones that fail.
            result = StageResult()
            for cut in cuts:
                try:
                    r = fn([cut])
                except Exception as e:
                    tb = traceback.extract_tb(e.__traceback__)[-1]
                    where = f"{Path(tb.filename).name}:{tb.lineno}"
                    result.rejected.append((cut, Reject("error", f"{type(e).__name__}: {e} ({where})")))
                    continue
                result.kept += r.kept
                result.rejected += r.rejected
            return result

    def process(self, cut_dicts: list[dict[str, Any]]) -> tuple[list[Cut], list[dict[str, Any]]]:
        """Run the chain; returns kept cuts and reject records (cut dicts with custom.reject)."""
        cuts = [deserialize_item(d) for d in cut_dicts]
        rejects: list[dict[str, Any]] = []
        for name, fn in self.stages:
            if not cuts:
                break
            result = self._apply(name, fn, cuts)
            cuts = result.kept
            for cut, r in result.rejected:
                rec = reject_record(cut.to_dict(), name, r.detail)
                rec["custom"]["reject"]["code"] = r.code
                rejects.append(rec)
        return cuts, rejects

    def run_shard(self, out_dir: Path, index: int, shard_hash: str, lines: list[str]) -> dict[str, Any]:
        """Process one shard and write its files atomically; the `done` file is written last, so
        its presence (with a matching hash) means the shard is complete."""
        cut_dicts = [json.loads(line) for line in lines]
        kept, rejects = self.process(cut_dicts)
        paths = shard_paths(out_dir, index)
        with open_jsonl_writer(paths["cuts"]) as f:
            for cut in kept:
                f.write(dumps(cut.to_dict()) + "\n")
        with open_jsonl_writer(paths["rejects"]) as f:
            for rec in rejects:
                f.write(dumps(rec) + "\n")
        stats = shard_stats(index, shard_hash, cut_dicts, kept, rejects)
        with atomic_path(paths["done"]) as tmp:
            tmp.write_text(json.dumps(stats, sort_keys=True))
        return stats


def shard_stats(
    index: int, shard_hash: str, inputs: list[dict], kept: list[Cut], rejects: list[dict]
) -> dict[str, Any]:
    by_reason = Counter(
        f"{r['custom']['reject']['stage']}:{r['custom']['reject'].get('code', 'rejected')}" for r in rejects
    )
    hours_task: dict[str, float] = defaultdict(float)
    cuts_task: Counter = Counter()
    hours_label: dict[str, float] = defaultdict(float)
    for cut in kept:
        task = (cut.custom or {}).get("task", "untemplated")
        hours_task[task] += cut.duration / 3600
        cuts_task[task] += 1
        for lab in _labels_of(cut):
            hours_label[lab] += cut.duration / 3600
    return {
        "index": index,
        "hash": shard_hash,
        "in": len(inputs),
        "out": len(kept),
        "rejected": len(rejects),
        "rejected_by_reason": dict(sorted(by_reason.items())),
        "hours_in": sum(float(d.get("duration", 0.0)) for d in inputs) / 3600,
        "hours_out": sum(c.duration for c in kept) / 3600,
        "hours_by_task": dict(sorted(hours_task.items())),
        "cuts_by_task": dict(sorted(cuts_task.items())),
        "hours_by_label": dict(sorted(hours_label.items())),
    }
