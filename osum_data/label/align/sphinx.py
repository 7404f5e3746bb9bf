"""`align_pocketsphinx`: forced alignment with PocketSphinx's shipped US-English model (offline).

The decoder searches only the reference word sequence (with optional silences between words), so
every word gets a span unless the audio cannot be matched at all. Frames are 10 ms. Words missing
from the pronunciation dictionary get a pronunciation guessed by espeak-ng (`g2p.py`), and the
supervision lists them in `custom.alignment_guessed_words`; with `guess_pronunciations: false`, or
when no guess can be made, the cut is rejected naming the words (`oov_word`).

A guessed pronunciation can be wrong, and the aligner then parks the word where it costs least (on
a pause). Every word's alignment score is the share of its frames that are speech
(`confidence.speech_share`); a cut with guessed words records the lowest of theirs as
`custom.confidence.alignment` (and `label_source.alignment` names the G2P too), and is rejected
as `low_confidence_guessed_pronunciation` when that is under `min_guessed_confidence`.
"""

from __future__ import annotations

import re
from typing import Annotated

import numpy as np
from lhotse.cut import Cut
from pydantic import Field

from osum_data.label.align.base import SAMPLE_RATE, AlignerStage
from osum_data.label.align.confidence import frame_levels_db, speech_share, speech_threshold_db
from osum_data.label.align.g2p import EspeakG2P
from osum_data.label.align.words import RefWord, Span, word_spans_from_tokens
from osum_data.run.params import ExistingDir, ExistingFile
from osum_data.run.stage import Reject, StageContext, StageResult, register_stage

_ALTERNATE = re.compile(r"\(\d+\)$")  # 'a(2)': the second pronunciation of 'a'


def shipped_model() -> tuple[str, str]:
    """(acoustic model dir, dictionary) of the en-us model inside the pocketsphinx package."""
    from pocketsphinx import get_model_path

    return get_model_path("en-us/en-us"), get_model_path("en-us/cmudict-en-us.dict")


@register_stage("align_pocketsphinx", version=3, num_cpus=1)
class PocketSphinxAligner(AlignerStage):
    """Word spans by PocketSphinx forced alignment; `model_dir`/`dictionary` default to the
    package's en-us model, `languages` are those the model can align, `guess_pronunciations`
    lets espeak-ng pronounce words the dictionary lacks, `min_guessed_confidence` is the speech
    share a word with a guessed pronunciation needs (0.5: most of its frames are speech; words
    on pauses measure under 0.2, see docs/decisions.md)."""

    source = "model:pocketsphinx-en-us"
    guessed_source = "model:pocketsphinx-en-us+g2p:espeak-ng"

    def __init__(
        self,
        model_dir: ExistingDir | None = None,
        dictionary: ExistingFile | None = None,
        languages: list[str] = ("en",),
        allow_zero_length: bool = False,
        guess_pronunciations: bool = True,
        min_guessed_confidence: Annotated[float, Field(ge=0, le=1)] = 0.5,
    ):
        super().__init__(allow_zero_length)
        self.g2p = EspeakG2P() if guess_pronunciations else None
        self.min_guessed_confidence = min_guessed_confidence
        self._guessed: dict[str, str] = {}  # word -> phones added to the decoders
        self._cut_guessed: list[str] = []  # the current cut's words with guessed pronunciations
        self._cut_confidence: float | None = None  # lowest speech share of those words
        from pocketsphinx import Decoder

        hmm, dic = shipped_model()
        self.languages = tuple(languages)
        settings = dict(
            hmm=model_dir or hmm, dict=dictionary or dic, lm=None, samprate=SAMPLE_RATE, loglevel="FATAL"
        )
        self.decoder = Decoder(**settings)
        self._settings = settings
        self._wide = None  # built on first need: the retry with wide beams
        self.frame_rate = float(self.decoder.config["frate"])

    def _run(self, decoder, tokens: list[str], pcm: bytes):
        """Aligned segments of the tokens, or None when the search found no complete alignment."""
        decoder.set_align_text(" ".join(tokens))
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        if decoder.hyp() is None:
            return None
        segs = [s for s in decoder.seg() if not (s.word.startswith(("<", "[")) or s.word.endswith("]"))]
        return segs if [_ALTERNATE.sub("", s.word) for s in segs] == tokens else None

    def _pronounce_missing(self, tokens: list[str], cut: Cut) -> None:
        """Add guessed pronunciations of the tokens the dictionary lacks, or reject the cut."""
        missing = sorted({t for t in tokens if self.decoder.lookup_word(t) is None})
        why: dict[str, str] = {}
        for word in missing:
            phones, reason = self.g2p.pronounce(word) if self.g2p else (None, "")
            if phones is None:
                why[word] = reason
                continue
            self._guessed[word] = " ".join(phones)
            for decoder in (self.decoder, self._wide):
                if decoder is not None:
                    decoder.add_word(word, self._guessed[word], True)
        if why:
            listed = ", ".join(f"{w} ({r})" if r else w for w, r in why.items())
            raise Reject("oov_word", f"cut {cut.id}: not in the pronunciation dictionary: {listed}")

    def align_cut(self, cut: Cut) -> Cut:
        self._cut_guessed, self._cut_confidence = [], None  # align() fills them
        out = super().align_cut(cut)
        if self._cut_guessed:
            sup = out.supervisions[0]
            custom = dict(sup.custom or {})
            custom["alignment_guessed_words"] = self._cut_guessed
            custom["label_source"] = {**custom.get("label_source", {}), "alignment": self.guessed_source}
            custom["confidence"] = {**(custom.get("confidence") or {}), "alignment": self._cut_confidence}
            sup.custom = custom
        return out

    def __call__(self, cuts: list[Cut], ctx: StageContext) -> StageResult:
        result = super().__call__(cuts, ctx)
        result.counters["guessed_pronunciation_cuts"] = sum(
            1 for c in result.kept if "alignment_guessed_words" in (c.supervisions[0].custom or {})
        )
        return result

    def align(self, audio: np.ndarray, words: list[RefWord], language: str, cut: Cut) -> list[Span | None]:
        tokens = [t for w in words for t in w.spoken]
        self._pronounce_missing(tokens, cut)
        self._cut_guessed = sorted(set(tokens) & self._guessed.keys())
        pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16).tobytes()
        segs = self._run(self.decoder, tokens, pcm)
        if segs is None:  # pruned away with the default beams: once more with wide ones (slower)
            if self._wide is None:
                from pocketsphinx import Decoder

                self._wide = Decoder(**self._settings, beam=1e-100, wbeam=1e-80, pbeam=1e-100)
                for word, phones in self._guessed.items():
                    self._wide.add_word(word, phones, True)
            segs = self._run(self._wide, tokens, pcm)
        if segs is None:
            raise Reject("align_failed", f"cut {cut.id}: pocketsphinx found no alignment of every word")
        # seg() frames are inclusive: a word covering frames 33..45 spans 0.33-0.46 s.
        spans = [Span(s.start_frame / self.frame_rate, (s.end_frame + 1) / self.frame_rate) for s in segs]
        return self._score(word_spans_from_tokens(words, spans), words, audio, cut)

    def _score(self, spans: list[Span | None], words: list[RefWord], audio: np.ndarray, cut: Cut):
        """Each word's speech share as its score; the floor on words with guessed pronunciations."""
        levels = frame_levels_db(audio, SAMPLE_RATE)
        threshold = speech_threshold_db(levels)
        out = [
            None
            if s is None
            else Span(s.start, s.end, round(speech_share(levels, threshold, s.start, s.end), 3))
            for s in spans
        ]
        guessed = set(self._cut_guessed)
        shares = {
            w.text: s.score
            for w, s in zip(words, out, strict=True)
            if s is not None and guessed & set(w.spoken)
        }
        if shares:
            word, low = min(shares.items(), key=lambda kv: kv[1])
            self._cut_confidence = low
            if low < self.min_guessed_confidence:
                raise Reject(
                    "low_confidence_guessed_pronunciation",
                    f"cut {cut.id}: {word!r} (pronunciation guessed by espeak-ng) has speech share "
                    f"{low:.2f} < min_guessed_confidence {self.min_guessed_confidence}",
                )
        return out
