"""Processing of one shard: a group of stages over a list of cuts, with the accounting every stage
must satisfy, and the shard's files on disk.

This is what a Ray actor runs; it is also usable in a plain loop (the benchmarks do), which keeps
the runner a thin scheduler around it. A pipeline's chain is split into groups of consecutive stages
with equal resource needs (schedule.py); a shard passes through the groups in order, as a
`ShardState` (cuts, reject records and per-stage counts; Ray pickles it through its object store),
and the last group writes it.

Accounting (checked here, per stage, on every shard): each cut a stage returns or rejects is either
one of its inputs (same id) or derived from one (`custom.source_cut_id` names it); every input is
accounted for at least once. An input with nothing is rejected as `dropped_by_stage`; a cut linked
to nothing is a bug of the stage and stops the run. Hence per stage `in = out - derived + rejected`,
where `derived` counts the extra cuts made from one input.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lhotse.cut import Cut
from lhotse.serialization import deserialize_item

from osum_data.errors import OsumError
from osum_data.manifest_io import (
    JSONTooDeep,
    atomic_path,
    dumps,
    loads_line,
    open_jsonl_writer,
)
from osum_data.rejects import placeholder_record, reject_record
from osum_data.run.config import PipelineConfig, StageSpec, build_config
from osum_data.run.stage import (
    Reject,
    StageContext,
    StageResult,
    add_counters,
    error_reject,
    get_stage,
    is_fatal,
    shard_files_dir,
)
from osum_data.sources import ID_CODE, id_problem, source_problem

SHARD_DIR = "shards"
INPUT_STAGE = "input"  # pseudo-stage of rejects made before any stage (bad lines, duplicates)
LABEL_FIELDS = ("gender", "age", "emotion", "style", "events")


class StageContractError(OsumError):
    """A stage broke the contract (returned a cut linked to none of its inputs, or one id twice)."""


@dataclass
class ShardInput:
    """What the driver sends for one shard: its raw input lines and what it already knows."""

    index: int
    hash: str
    lines: list[str]
    line_numbers: list[int]  # 1-based line number in the input file, per line
    pre_rejects: dict[int, tuple[str, str]] = field(default_factory=dict)  # position -> (code, reason)

    def __len__(self) -> int:
        return len(self.lines)

    def subset(self, positions: list[int]) -> ShardInput:
        """The same shard with only the lines at `positions` (the runner's isolation bisects)."""
        pre = {j: self.pre_rejects[i] for j, i in enumerate(positions) if i in self.pre_rejects}
        lines = [self.lines[i] for i in positions]
        return ShardInput(self.index, self.hash, lines, [self.line_numbers[i] for i in positions], pre)

    def describe(self, pos: int) -> str:
        return f"input line {self.line_numbers[pos]}"


@dataclass
class ShardState:
    """A shard between groups of stages (Ray pickles it through its object store): the cuts still
    going, the reject records so far, and one stats row per stage run."""

    index: int
    hash: str
    n_in: int  # input lines of the shard
    hours_in: float
    cuts: list[Cut]
    rejects: list[dict[str, Any]]
    stages: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.cuts)

    def subset(self, positions: list[int]) -> ShardState:
        """This group's input reduced to the cuts at `positions`, with nothing recorded yet (the
        runner's isolation runs such subsets only to see whether they kill the worker)."""
        return replace(self, cuts=[self.cuts[i] for i in positions], rejects=[], stages=[])

    def describe(self, pos: int) -> str:
        return f"cut {self.cuts[pos].id!r}"


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


def input_reject(line_number: int, raw: str, code: str, reason: str) -> dict[str, Any]:
    """The reject record of an input line that is not a usable cut (a placeholder cut naming it)."""
    return placeholder_record(
        f"input-line-{line_number}", INPUT_STAGE, Reject(code, reason), input_line=line_number, raw=raw[:2000]
    )


def _reject_dict(cut: Cut, stage: str, r: Reject) -> dict[str, Any]:
    return reject_record(cut.to_dict(), stage, r)


def _stage_stats(name: str) -> dict[str, Any]:
    return {"stage": name, "in": 0, "out": 0, "rejected": 0, "derived": 0}


def account(
    name: str, inputs: list[Cut], result: StageResult
) -> tuple[list[Cut], list[tuple[Cut, Reject]], int]:
    """Check one stage's result against its inputs; returns (kept, rejected, derived)."""
    position = {c.id: i for i, c in enumerate(inputs)}
    counts = [0] * len(inputs)
    seen: set[str] = set()

    def link(cut: Cut, how: str) -> None:
        if cut.id in seen:
            raise StageContractError(f"stage {name!r} {how} cut id {cut.id!r} twice")
        seen.add(cut.id)
        i = position.get(cut.id)
        if i is None:
            source = (cut.custom or {}).get("source_cut_id")
            i = position.get(source)
            if i is None:
                raise StageContractError(
                    f"stage {name!r} {how} cut {cut.id!r}, which is none of its inputs and has no "
                    f"custom.source_cut_id naming one (got {source!r})"
                )
        counts[i] += 1

    for cut in result.kept:
        link(cut, "returned")
    for cut, _ in result.rejected:
        link(cut, "rejected")
    rejected = list(result.rejected)
    for i, n in enumerate(counts):
        if n == 0:
            detail = f"stage {name!r} returned neither this cut nor a reject for it (a bug in the stage)"
            rejected.append((inputs[i], Reject("dropped_by_stage", detail)))
            counts[i] = 1
    return result.kept, rejected, sum(n - 1 for n in counts)


class ShardProcessor:
    """A group of stages, built once (one model load per worker), applied shard after shard.

    `stage_names` selects the group (default: the whole chain). `first`/`last` say whether this
    group parses raw input lines and whether it writes the shard's files.
    """

    def __init__(
        self,
        config: PipelineConfig | dict[str, Any],
        run_dir: str | Path,
        stage_names: list[str] | None = None,
        llm: dict[str, Any] | None = None,
    ):
        self.config = config if isinstance(config, PipelineConfig) else build_config(config)
        self.run_dir = Path(run_dir)
        chain = self.config.chain
        self.specs: list[StageSpec] = [s for s in chain if stage_names is None or s.name in stage_names]
        self.first = not self.specs or self.specs[0] is chain[0]
        self.last = not self.specs or self.specs[-1] is chain[-1]
        self.stages = [(spec, _build(spec, llm)) for spec in self.specs]

    # --- the chain ---------------------------------------------------------------------------

    def _apply(self, spec: StageSpec, fn, cuts: list[Cut], ctx: StageContext) -> StageResult:
        if spec.kind == "per_cut":
            return fn(cuts, ctx)  # catches per cut already
        snapshot = [c.to_dict() for c in cuts]  # the batch as it came, in case the stage mutates it
        try:
            return fn(cuts, ctx)
        except Exception as e:
            if is_fatal(e):
                raise
            # One bad cut must not sink the batch: redo it cut by cut from fresh copies of the
            # input (the failed call may have changed the cuts) and reject only what fails.
            result = StageResult()
            for d in snapshot:
                cut = deserialize_item(json.loads(json.dumps(d)))
                try:
                    r = fn([cut], ctx)
                except Exception as e:
                    if is_fatal(e):
                        raise
                    result.rejected.append((cut, error_reject(e)))
                    continue
                result.kept += r.kept
                result.rejected += r.rejected
                add_counters(result.counters, r.counters)
            return result

    def run_stages(
        self, index: int, cuts: list[Cut], stats: list[dict[str, Any]], trace: Path | None = None
    ) -> tuple[list[Cut], list[dict[str, Any]]]:
        """Run this group's stages; appends per-stage stats; returns (kept, reject records)."""
        rejects: list[dict[str, Any]] = []
        for spec, fn in self.stages:
            s = _stage_stats(spec.name)
            stats.append(s)
            s["in"] = len(cuts)
            if not cuts:
                continue
            if trace is not None:
                trace.write_text(spec.name)
            ctx = StageContext(
                seed=self.config.seed, shard_index=index, run_dir=self.run_dir, stage=spec.name
            )
            result = self._apply(spec, fn, cuts, ctx)
            kept, rejected, derived = account(spec.name, cuts, result)
            s.update(out=len(kept), rejected=len(rejected), derived=derived)
            if result.counters:
                s["counters"] = add_counters({}, result.counters)
            rejects += [_reject_dict(c, spec.name, r) for c, r in rejected]
            cuts = kept
        return cuts, rejects

    # --- one shard through this group ----------------------------------------------------------

    def start(self, shard: ShardInput) -> ShardState:
        """Parse a shard's input lines into a ShardState (first group only). Malformed lines and
        lines the driver flagged (duplicate ids, cuts that kill workers) become rejects."""
        shutil.rmtree(shard_files_dir(self.run_dir, shard.index), ignore_errors=True)
        cuts, rejects = [], []
        hours_in = 0.0
        for pos, (line, number) in enumerate(zip(shard.lines, shard.line_numbers, strict=True)):
            if pos in shard.pre_rejects:
                code, reason = shard.pre_rejects[pos]
                rejects.append(input_reject(number, line, code, reason))
                continue
            try:
                d = loads_line(line)
            except JSONTooDeep as e:
                rejects.append(input_reject(number, line, e.code, f"input line {number}: JSON {e.msg}"))
                continue
            except json.JSONDecodeError as e:
                rejects.append(input_reject(number, line, "bad_json", f"input line {number}: not JSON ({e})"))
                continue
            unsafe = _unsafe(d, line, number, self.config)
            if unsafe is not None:
                rejects.append(unsafe)
                continue
            try:
                cut = deserialize_item(d)
                if not isinstance(cut, Cut):
                    raise TypeError(f"a {type(cut).__name__}, not a cut")
            except Exception as e:
                msg = " ".join(str(e).split())[:300]
                rejects.append(
                    input_reject(number, line, "not_a_cut", f"input line {number}: not a lhotse cut ({msg})")
                )
                continue
            hours_in += cut.duration / 3600
            cuts.append(cut)
        in_stats = _stage_stats(INPUT_STAGE)
        in_stats.update({"in": len(shard.lines), "out": len(cuts), "rejected": len(rejects)})
        return ShardState(shard.index, shard.hash, len(shard.lines), hours_in, cuts, rejects, [in_stats])

    def process(
        self,
        item: ShardInput | ShardState,
        exclude: dict[int, tuple[str, str, str]] | None = None,
        trace: str | None = None,
        write: bool = True,
    ) -> tuple[dict[str, Any], ShardState | None]:
        """Run this group on a shard. `item` is a ShardInput for the first group, else the
        ShardState the previous group returned. `exclude` maps positions of this group's input to
        (stage, code, reason): those cuts are rejected without running (the runner's isolation of
        cuts that kill workers). Returns (status, state): the last group writes the shard and
        returns its stats as status and no state."""
        state = self.start(item) if isinstance(item, ShardInput) else item
        exclude = exclude or {}
        rejects = list(state.rejects)
        cuts = []
        for pos, cut in enumerate(state.cuts):
            if pos in exclude:
                stage, code, reason = exclude[pos]
                rejects.append(_reject_dict(cut, stage, Reject(code, reason)))
            else:
                cuts.append(cut)
        stats = [dict(s) for s in state.stages]
        first_of_group = len(stats)
        kept, new_rejects = self.run_stages(state.index, cuts, stats, Path(trace) if trace else None)
        _count_excluded(stats[first_of_group:], [s.name for s in self.specs], exclude)
        state = replace(state, cuts=kept, rejects=rejects + new_rejects, stages=stats)
        if not (self.last and write):
            return {"index": state.index, "ok": True}, state
        return self.write(state), None

    def write(self, state: ShardState) -> dict[str, Any]:
        """Write the shard's files atomically; the `done` file is written last, so its presence
        (with a matching hash) means the shard, its files directory included, is complete."""
        paths = shard_paths(self.run_dir, state.index)
        cuts = [c.to_dict() for c in state.cuts]
        with open_jsonl_writer(paths["cuts"]) as f:
            for d in cuts:
                f.write(dumps(d) + "\n")
        with open_jsonl_writer(paths["rejects"]) as f:
            for rec in state.rejects:
                f.write(dumps(rec) + "\n")
        stats = shard_stats(state, cuts)
        with atomic_path(paths["done"]) as tmp:
            tmp.write_text(json.dumps(stats, sort_keys=True))
        return stats

    def run_shard(self, shard: ShardInput) -> dict[str, Any]:
        """The whole chain over one shard in this process (all stages in this processor)."""
        status, _ = self.process(shard)
        return status


def _unsafe(d: Any, line: str, number: int, config: PipelineConfig) -> dict[str, Any] | None:
    """The reject record of an input cut whose id or audio sources are not safe to use (before
    anything decodes it), else None."""
    if not isinstance(d, dict) or not isinstance(d.get("id"), str):
        return None  # not a cut: the parse below says so
    why = id_problem(d["id"])
    if why is not None:
        return input_reject(number, line, ID_CODE, f"input line {number}: {why}")
    problem = source_problem(d, config.sources)
    if problem is None:
        return None
    code, detail = problem
    reason = f"input line {number}: cut {d['id']!r}: {detail}"
    if not isinstance(d.get("custom") or {}, dict):
        return input_reject(number, line, code, reason)
    return reject_record(d, INPUT_STAGE, Reject(code, reason))


def _count_excluded(
    group_stats: list[dict[str, Any]], names: list[str], exclude: dict[int, tuple[str, str, str]]
) -> None:
    """Count excluded cuts as rejects of the stage that killed the worker (the group's first stage
    when unknown): they entered every stage up to it, so per-stage accounting still chains."""
    for stage, k in Counter(stage for stage, _, _ in exclude.values()).items():
        culprit = names.index(stage) if stage in names else 0
        for j, s in enumerate(group_stats[: culprit + 1]):
            s["in"] += k
            s["out" if j < culprit else "rejected"] += k


def shard_stats(state: ShardState, cuts: list[dict[str, Any]]) -> dict[str, Any]:
    """The shard's `done` record (its row of the summary); `cuts` are the kept cuts as dicts."""
    stages = state.stages
    rejects = state.rejects
    by_reason = Counter(
        f"{r['custom']['reject']['stage']}:{r['custom']['reject'].get('code', 'rejected')}" for r in rejects
    )
    hours_task: dict[str, float] = defaultdict(float)
    cuts_task: Counter = Counter()
    hours_label: dict[str, float] = defaultdict(float)
    for d in cuts:
        task = (d.get("custom") or {}).get("task", "untemplated")
        duration = float(d.get("duration", 0.0))
        hours_task[task] += duration / 3600
        cuts_task[task] += 1
        for lab in _labels_of(d):
            hours_label[lab] += duration / 3600
    derived = sum(s["derived"] for s in stages)
    out = len(cuts)
    if state.n_in != out - derived + len(rejects):
        raise StageContractError(
            f"shard {state.index}: in {state.n_in} != out {out} - derived {derived} + rejected {len(rejects)}"
        )
    return {
        "index": state.index,
        "hash": state.hash,
        "in": state.n_in,
        "out": out,
        "rejected": len(rejects),
        "transient": sum(1 for r in rejects if r["custom"]["reject"].get("transient")),
        "derived": derived,
        "stages": stages,
        "rejected_by_reason": dict(sorted(by_reason.items())),
        "hours_in": state.hours_in,
        "hours_out": sum(float(d.get("duration", 0.0)) for d in cuts) / 3600,
        "hours_by_task": dict(sorted(hours_task.items())),
        "cuts_by_task": dict(sorted(cuts_task.items())),
        "hours_by_label": dict(sorted(hours_label.items())),
    }


def _labels_of(d: dict[str, Any]) -> list[str]:
    """'field:value' for each label a sample carries, for the per-label hours of the summary."""
    sups = d.get("supervisions") or []
    if not sups:
        return []
    sup = sups[0]
    custom = sup.get("custom") or {}
    out = []
    for f in LABEL_FIELDS:
        value = sup.get("gender") if f == "gender" else custom.get(f)
        for v in value if isinstance(value, list) else [value]:
            if v and isinstance(v, str | int | float):
                out.append(f"{f}:{v}")
    return out


def _build(spec: StageSpec, llm: dict[str, Any] | None = None):
    """The callable `(cuts, ctx) -> StageResult` of one stage entry (a class stage is built here:
    once per worker). A stage that takes `llm` gets the endpoint the driver resolved."""
    defn = get_stage(spec.stage)
    params = spec.typed_params()
    if defn.uses_llm:
        from osum_data.llm.settings import LLMSettings

        if llm is None:
            raise RuntimeError(f"stage {spec.name!r} needs an LLM endpoint and none was resolved")
        params["llm"] = LLMSettings.model_validate(llm)
    return defn.factory(**params)
