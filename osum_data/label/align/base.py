"""What every aligner stage shares: load the supervised audio, align, check, write the alignment.

A backend implements `align(audio, words, language, cut)` returning one span (or None) per
reference word, in seconds from the start of `audio` (16 kHz mono float32 of the supervision).
The batch loop turns every failure into a reject with a reason and counts what it did; the span
checks of `words.check_spans` run on every backend's output.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

import numpy as np
from lhotse.cut import Cut

from osum_data.label.align.words import (
    RefWord,
    Span,
    check_spans,
    language_of,
    reference_words,
    set_word_alignment,
)
from osum_data.run.stage import Reject, StageContext, StageResult, rejecting

SAMPLE_RATE = 16000


def supervision_audio(cut: Cut, sampling_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, float]:
    """(mono float32 audio of the first supervision at `sampling_rate`, its offset in the cut)."""
    sup = cut.supervisions[0]
    start = max(0.0, sup.start)
    end = min(cut.duration, sup.end) if sup.duration > 0 else cut.duration
    src = cut.resample(sampling_rate) if cut.sampling_rate != sampling_rate else cut
    if start > 0 or end < cut.duration - 1e-6:
        src = src.truncate(offset=start, duration=end - start, preserve_id=True)
    audio = np.asarray(src.load_audio(), dtype=np.float32)
    audio = audio.mean(axis=0) if audio.ndim == 2 else audio
    return audio, start


class AlignerStage(ABC):
    """Base of the aligner stages (not registered itself)."""

    source = "aligner"  # label_source of the alignments this stage writes
    languages: tuple[str, ...] | None = None  # None: any language
    needs_audio = True  # False: align() gets an empty array (alignments read from files)

    def __init__(self, allow_zero_length: bool = False):
        self.allow_zero_length = allow_zero_length

    @abstractmethod
    def align(self, audio: np.ndarray, words: list[RefWord], language: str, cut: Cut) -> list[Span | None]:
        """One span (or None) per reference word, in seconds from the start of `audio`."""

    def align_cut(self, cut: Cut) -> Cut:
        if not cut.supervisions:
            raise Reject("no_supervision", f"cut {cut.id} has no supervision")
        if len(cut.supervisions) > 1:
            raise Reject("multiple_supervisions", f"cut {cut.id} has {len(cut.supervisions)} supervisions")
        sup = cut.supervisions[0]
        lang = language_of(sup.language, sup.text or "")
        if self.languages is not None and lang not in self.languages:
            raise Reject(
                "unsupported_language",
                f"cut {cut.id}: language {sup.language or lang!r}; "
                f"this aligner covers {', '.join(self.languages)}",
            )
        words = reference_words(sup.text or "", lang)
        if not words:
            raise Reject("no_words", f"cut {cut.id}: transcript {sup.text!r} has no words to align")
        if self.needs_audio:
            audio, offset = supervision_audio(cut)
            duration = len(audio) / SAMPLE_RATE
        else:
            audio, offset = np.zeros(0, dtype=np.float32), max(0.0, sup.start)
            duration = (min(cut.duration, sup.end) if sup.duration > 0 else cut.duration) - offset
        spans = self.align(audio, words, lang, cut)
        spans = check_spans(cut.id, words, spans, duration, self.allow_zero_length)
        return set_word_alignment(cut, words, spans, offset, self.source)

    def __call__(self, cuts: list[Cut], ctx: StageContext) -> StageResult:
        result = StageResult()
        t0, audio_s, words = time.perf_counter(), 0.0, 0
        for cut in cuts:
            with rejecting(result, cut):
                out = self.align_cut(cut)
                result.kept.append(out)
                audio_s += out.duration
                words += len(out.supervisions[0].alignment["word"])
        result.counters = {
            "aligned_audio_s": round(audio_s, 3),
            "aligned_words": words,
            "align_wall_s": round(time.perf_counter() - t0, 3),
        }
        return result


def resolve_device(device: str) -> str:
    """'auto': CUDA when this worker sees a GPU (Ray gave its actor one), else CPU; 'cuda' without
    a GPU is an error, so a misconfigured GPU run does not silently crawl on CPU."""
    import torch

    has_cuda = torch.cuda.is_available()
    if device == "auto":
        return "cuda" if has_cuda else "cpu"
    if device == "cuda" and not has_cuda:
        raise RuntimeError("device 'cuda' asked for, but this worker sees no GPU (use device: auto)")
    return device
