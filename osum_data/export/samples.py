"""What every trainer format needs from a task sample, and the shared export-stage shape.

A task sample (a templated cut) becomes: instruction, target, task key, transcript, labels, and its
audio as 16 kHz mono FLAC (lossless, about half of 16-bit WAV). Every export stage is a
`FormatStage`: per runner shard it turns the cuts into items (`prepare`; a cut that cannot be
exported is rejected with a `Reject` naming the code), groups them (`group`: a mix's
`train`/`dev`/`test`, else `train`) and writes each group's files (`write_split`) into one part
folder of the shard's files folder; each format's gather step joins them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from lhotse.cut import Cut

from osum_data.export.engine import call_part, check_pre_rejected
from osum_data.export.media import brief, flac_bytes, render_16k, safe_name, span_problem
from osum_data.export.mix_folder import mixed_id
from osum_data.export.osum_reader import SAMPLING_RATE
from osum_data.rejects import Reject
from osum_data.run.stage import StageContext, StageResult, is_fatal, rejecting
from osum_data.tasks import parse_target, registry

LABELS = ("emotion", "age", "age_years", "style", "events", "answer", "label_source")


@dataclass
class Sample:
    id: str
    name: str  # file-name-safe name of its audio (a mix's repeated copies share one file)
    split: str
    task: str
    target: str
    instruction: str
    transcript: str
    language: str
    speaker: str
    gender: str
    duration: float
    flac: bytes
    labels: dict[str, Any] = field(default_factory=dict)


def split_of(cut: Cut) -> str:
    return ((cut.custom or {}).get("mix") or {}).get("split") or "train"


def audio_key(cut: Cut) -> str:
    """The name of a cut's audio: a mix's copies of one cut (`_repeatN` ids) share it."""
    mix = (cut.custom or {}).get("mix") or {}
    return (
        mixed_id(mix["dataset"], mix["source_id"]) if mix.get("dataset") and mix.get("source_id") else cut.id
    )


def task_target(cut: Cut) -> tuple[str, str]:
    """(task key, target text), or a Reject (`missing_target`, `unknown_task`, `bad_target`); an
    untemplated cut is plain ASR on its transcript."""
    custom = getattr(cut, "custom", None) or {}
    if "task" not in custom and "target" not in custom:
        task = registry().task("asr").key
        txt = cut.supervisions[0].text if cut.supervisions else None
    else:
        task, txt = custom.get("task"), custom.get("target")
    if not isinstance(txt, str) or not txt.strip():
        raise Reject("missing_target", "missing target")
    if not isinstance(task, str) or task not in registry().all_keys:
        raise Reject("unknown_task", f"unknown task: {task!r}")
    try:
        parse_target(task, txt)
    except (ValueError, KeyError) as e:
        raise Reject("bad_target", f"bad target: {e}") from None
    return task, txt


def checked_span(cut: Cut) -> None:
    """A Reject (`bad_span`) for a cut whose span is not inside its recording."""
    span = span_problem(cut)
    if span is not None:
        raise Reject("bad_span", span)


def audio_reject(e: Exception) -> Reject:
    """Any decoder/transform failure of a cut's audio, as a Reject (`audio`) with its cause; a full
    disk is no reject (it stops the run)."""
    if is_fatal(e):
        raise e
    return Reject("audio", f"audio: {brief(e)}")


def to_sample(cut: Cut) -> Sample:
    """The sample, or Reject: not a task sample (code `target`), a span outside the recording, no
    instruction, no audio."""
    task, target = task_target(cut)
    checked_span(cut)
    custom = cut.custom or {}
    instruction = custom.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip():
        raise Reject(
            "missing_instruction", f"cut {cut.id} has no custom.instruction (run the template stage)"
        )
    try:
        samples = render_16k(cut)
        flac = flac_bytes(samples)
    except Exception as e:
        raise audio_reject(e) from None
    sup = cut.supervisions[0] if cut.supervisions else None
    sup_custom = (sup.custom if sup is not None else None) or {}
    return Sample(
        id=cut.id,
        name=safe_name(audio_key(cut)),
        split=split_of(cut),
        task=task,
        target=target,
        instruction=instruction,
        transcript=(sup.text or "") if sup is not None else "",
        language=(sup.language or "") if sup is not None else "",
        speaker=(sup.speaker or "") if sup is not None else "",
        gender=(sup.gender or "") if sup is not None else "",
        duration=len(samples) / SAMPLING_RATE,
        flac=flac,
        labels={k: sup_custom[k] for k in LABELS if sup_custom.get(k) not in (None, "", [], {})},
    )


class FormatStage(ABC):
    """Base of the export stages: items in, per-group files out. Subclasses set `stage_name` (the
    name they are registered under) and `write_split`; `prepare`, `group` and `count` default to
    the FLAC `Sample` of the NeMo, HF and ShareGPT formats."""

    stage_name: ClassVar[str]

    def __call__(self, cuts: list[Cut], ctx: StageContext) -> StageResult:
        result = StageResult(counters={"seconds": 0.0})
        by_group: dict[str, list[Any]] = {}
        # This call's files go to their own part folder: if the call raises, the runner retries the
        # batch cut by cut and every retry adds a part, instead of replacing the shard's files.
        with call_part(ctx.files_dir) as files:
            for cut in cuts:
                with rejecting(result, cut):  # any error of one cut rejects that cut, with the cause
                    check_pre_rejected(cut.custom)
                    group = self.group(cut)
                    item = self.prepare(cut, files / group)
                    by_group.setdefault(group, []).append(item)
                    result.kept.append(cut)
                    self.count(item, result.counters)
            for group, items in by_group.items():
                (files / group).mkdir(parents=True, exist_ok=True)
                self.write_split(items, files / group)
        return result

    def prepare(self, cut: Cut, folder: Path) -> Any:
        """What `write_split` writes of one cut (a format may write the cut's own large files into
        `folder` here, once nothing can reject it, rather than hold them); raise Reject when it
        cannot be exported."""
        return to_sample(cut)

    def group(self, cut: Cut) -> str:
        """The folder (relative to the part) the cut's item is written in."""
        return split_of(cut)

    def count(self, item: Any, counters: dict[str, Any]) -> None:
        """Add one kept item to the stage's counters (summed into the run's summary)."""
        counters["seconds"] += item.duration

    @abstractmethod
    def write_split(self, items: list[Any], folder: Path) -> None:
        """Write one group's items in the format's layout into `folder`."""
