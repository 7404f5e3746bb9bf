"""Stages that exist only for tests of the runner and the stage contract.

Loaded through a pipeline's `imports: [stages_for_tests]`; tests put this folder on PYTHONPATH so
Ray workers can import it too. Some misbehave on purpose (kill their worker, drop cuts, mutate and
raise): the runner must turn each into a clear reject or error, never a hang or a silent loss.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Literal

from lhotse import MonoCut, SupervisionSegment
from lhotse.cut import Cut
from lhotse.utils import fastcopy

from osum_data.run.params import SideInput
from osum_data.run.stage import (
    Reject,
    StageContext,
    StageResult,
    per_cut_stage,
    register_stage,
    source_stage,
)


@per_cut_stage("sleep_per_cut")
def sleep_per_cut(cut: Cut, seconds: float = 0.01) -> Cut:
    time.sleep(seconds)
    return cut


@register_stage("count_loads")
class CountLoads:
    """Stands in for a model stage: appends its process id to `log` each time it is built."""

    def __init__(self, log: str):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")

    def __call__(self, cuts: list[Cut], ctx: StageContext) -> StageResult:
        return StageResult(kept=list(cuts))


@per_cut_stage("kill_worker_on")
def kill_worker_on(cut: Cut, marker: str, how: Literal["segv", "exit"] = "segv") -> Cut:
    """Kills its own process on cuts whose id contains `marker`, as a crashing decoder would."""
    if marker in cut.id:
        if how == "segv":
            os.kill(os.getpid(), signal.SIGSEGV)
        os._exit(3)
    return cut


@register_stage("drop_silently")
class DropSilently:
    """A buggy batch stage: returns every cut but those whose id contains `marker`, no reject."""

    def __init__(self, marker: str):
        self.marker = marker

    def __call__(self, cuts: list[Cut], ctx: StageContext) -> StageResult:
        return StageResult(kept=[c for c in cuts if self.marker not in c.id])


@register_stage("orphan_output")
class OrphanOutput:
    """A buggy batch stage: returns a cut that is linked to none of its inputs."""

    def __call__(self, cuts: list[Cut], ctx: StageContext) -> StageResult:
        return StageResult(kept=[*cuts, fastcopy(cuts[0], id="made-up")])


@register_stage("count_then_fail")
class CountThenFail:
    """Adds 1 to `custom.count` of every cut, then raises on the batch if any id holds `marker`:
    the runner's retry must start from the batch as it came, so each kept cut counts 1."""

    def __init__(self, marker: str):
        self.marker = marker

    def __call__(self, cuts: list[Cut], ctx: StageContext) -> StageResult:
        for c in cuts:
            c.custom = {**(c.custom or {}), "count": (c.custom or {}).get("count", 0) + 1}
        if any(self.marker in c.id for c in cuts):
            raise RuntimeError(f"a cut with {self.marker!r} in the batch")
        return StageResult(kept=cuts)


@per_cut_stage("copies")
def copies(cut: Cut, ctx: StageContext, n: int = 2) -> list[Cut]:
    """The cut plus `n` derived copies (ids `<id>_copyK`, linked by custom.source_cut_id), each
    with a file written into the shard's files directory."""
    out = [cut]
    for k in range(n):
        new_id = f"{cut.id}_copy{k}"
        (ctx.files_dir / f"{new_id}.txt").write_text(f"{ctx.seed} {ctx.shard_index} {new_id}\n")
        out.append(fastcopy(cut, id=new_id, custom={**(cut.custom or {}), "source_cut_id": cut.id}))
    return out


@per_cut_stage("reject_copies")
def reject_copies(cut: Cut) -> Cut:
    if "_copy1" in cut.id:
        raise Reject("second_copy", f"{cut.id} is a second copy")
    return cut


@per_cut_stage("tag_side_input")
def tag_side_input(cut: Cut, clips: SideInput) -> Cut:
    """Records how many cuts the side input holds (loaded once per worker)."""
    cut.custom = {**(cut.custom or {}), "side_cuts": len(clips.cuts())}
    return cut


@per_cut_stage("needs_gpu", num_gpus=1)
def needs_gpu(cut: Cut) -> Cut:
    """Declares a GPU; on a cluster without one it must still run (on CPU)."""
    cut.custom = {**(cut.custom or {}), "gpu_stage_pid": os.getpid()}
    return cut


@per_cut_stage("record_pid", num_cpus=0.5, concurrency=1)
def record_pid(cut: Cut) -> Cut:
    cut.custom = {**(cut.custom or {}), "small_pool_pid": os.getpid()}
    return cut


@source_stage("numbered_prompts")
def numbered_prompts(ctx: StageContext, n: int = 10, text: str = "prompt number") -> Iterator[Cut]:
    """n audio-less cuts with a transcript each, deterministic for the pipeline seed."""
    for i in range(n):
        cut_id = f"src-{ctx.seed}-{i:04d}"
        sup = SupervisionSegment(id=cut_id, recording_id="none", start=0, duration=0, text=f"{text} {i}")
        yield MonoCut(id=cut_id, start=0, duration=0, channel=0, supervisions=[sup])


@register_stage("llm_title", concurrency=1, num_cpus=0.5)
class LLMTitle:
    """A minimal LLM stage: asks for a one-word title of each transcript (structured output) and
    stores it; the runner passes the endpoint it resolved as `llm`."""

    def __init__(self, llm, template_version: str = "1"):
        from pydantic import BaseModel

        from osum_data.llm.client import LLMClient

        class Title(BaseModel):
            title: str

        self.schema, self.version = Title, template_version
        self.client = LLMClient(llm)

    def __call__(self, cuts: list[Cut], ctx: StageContext) -> StageResult:
        from osum_data.llm.client import LLMRequest

        before = self.client.stats.as_dict()
        requests = [
            LLMRequest(
                id=c.id,
                messages=[
                    {"role": "user", "content": f"Give a one-word title for: {c.supervisions[0].text}"}
                ],
                schema=self.schema,
                template_version=self.version,
                params={"max_tokens": 24},
            )
            for c in cuts
        ]
        result = StageResult()
        for cut, res in zip(cuts, self.client.run(requests), strict=True):
            if res.ok:
                cut.custom = {**(cut.custom or {}), "title": res.value.title}
                result.kept.append(cut)
            else:
                result.rejected.append((cut, Reject(res.code, res.reason or res.code)))
        after = self.client.stats.as_dict()
        result.counters = {
            k: after[k] - before[k] for k in ("requests", "cache_hits", "prompt_tokens", "completion_tokens")
        }
        return result


@per_cut_stage("endpoint_down_while")
def endpoint_down_while(cut: Cut, flag: str) -> Cut:
    """Stands in for an LLM stage whose endpoint is unreachable while the file `flag` exists."""
    from pathlib import Path

    if Path(flag).exists():
        raise Reject("unavailable", "endpoint unreachable after bounded retries", transient=True)
    return cut
