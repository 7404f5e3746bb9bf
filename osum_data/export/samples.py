"""What every trainer format needs from a task sample, and the shared export-stage shape.

A task sample (a templated cut) becomes: instruction, target, task key, transcript, labels, and its
audio as 16 kHz mono FLAC (lossless, about half of 16-bit WAV). The NeMo, Hugging Face and ShareGPT
exports are stages built on `FormatStage`: per runner shard they turn the cuts into samples (a cut
that cannot be exported is rejected with the reason) and write the shard's files per split (a mix's
`train`/`dev`/`test`, else `train`) into the shard's files folder; each format's gather step joins them.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soundfile as sf
from lhotse.cut import Cut

from osum_data.export.engine import call_part
from osum_data.export.osum import _brief, _check_sources_exist, _target, render_16k, safe_name, span_problem
from osum_data.export.osum_reader import SAMPLING_RATE
from osum_data.run.stage import Reject, StageContext, StageResult, is_fatal, rejecting

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
    from osum_data.mix.plan import mixed_id

    mix = (cut.custom or {}).get("mix") or {}
    return (
        mixed_id(mix["dataset"], mix["source_id"]) if mix.get("dataset") and mix.get("source_id") else cut.id
    )


def flac_bytes(cut: Cut) -> tuple[bytes, int]:
    """The cut's audio as 16 kHz mono 16-bit FLAC; (bytes, samples)."""
    _check_sources_exist(cut)
    samples = render_16k(cut)
    if len(samples) == 0:
        raise ValueError("no audio samples (zero duration)")
    buf = io.BytesIO()
    sf.write(buf, samples, SAMPLING_RATE, format="FLAC", subtype="PCM_16")
    return buf.getvalue(), len(samples)


def to_sample(cut: Cut) -> Sample:
    """The sample, or Reject: not a task sample (code `target`), a span outside the recording, no
    instruction, no audio."""
    try:
        task, target = _target(cut)
    except Exception as e:  # osum._Reject: missing/unknown/unparsable target
        raise Reject(str(e).split(":")[0].replace(" ", "_"), str(e)) from None
    span = span_problem(cut)
    if span is not None:
        raise Reject("bad_span", span)
    custom = cut.custom or {}
    instruction = custom.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip():
        raise Reject(
            "missing_instruction", f"cut {cut.id} has no custom.instruction (run the template stage)"
        )
    try:
        flac, n = flac_bytes(cut)
    except Exception as e:
        if is_fatal(e):
            raise
        raise Reject("audio", f"audio: {_brief(e)}") from None
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
        duration=n / SAMPLING_RATE,
        flac=flac,
        labels={k: sup_custom[k] for k in LABELS if sup_custom.get(k) not in (None, "", [], {})},
    )


class FormatStage(ABC):
    """Base of the export stages: samples in, per-split files out (`write_split`)."""

    def __call__(self, cuts: list[Cut], ctx: StageContext) -> StageResult:
        result = StageResult(counters={"seconds": 0.0})
        by_split: dict[str, list[Sample]] = {}
        for cut in cuts:
            with rejecting(result, cut):  # any error of one cut rejects that cut, with the cause
                s = to_sample(cut)
                by_split.setdefault(s.split, []).append(s)
                result.kept.append(cut)
                result.counters["seconds"] += s.duration
        # This call's files go to their own part folder: if writing raises, the runner retries the
        # batch cut by cut and every retry adds a part, instead of replacing the shard's files.
        with call_part(ctx.files_dir) as files:
            for split, samples in by_split.items():
                (files / split).mkdir(parents=True, exist_ok=True)
                self.write_split(samples, files / split)
        return result

    @abstractmethod
    def write_split(self, samples: list[Sample], folder: Path) -> None:
        """Write one split's samples in the format's layout into `folder`."""
