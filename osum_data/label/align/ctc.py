"""`align_ctc`: CTC forced alignment (`torchaudio.functional.forced_align`) on a wav2vec2/MMS CTC
checkpoint from a local directory (a Hugging Face `save_pretrained` folder: config.json, weights,
vocab.json, preprocessor_config.json). Nothing is downloaded.

The spoken tokens of the transcript are spelled in the model's characters (upper case if its
vocabulary is upper case; word delimiters left out, as for MMS), the emissions are aligned to that
sequence with the blank token of the checkpoint (its pad token), and each character's frames become
seconds by the feature encoder's stride (the product of `conv_stride`: 320 samples, 20 ms, at
16 kHz). A word spans its first character's first frame to its last character's last frame.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from lhotse.cut import Cut

from osum_data.label.align.base import SAMPLE_RATE, AlignerStage, resolve_device
from osum_data.label.align.words import RefWord, Span, word_spans_from_tokens
from osum_data.run.params import ExistingDir
from osum_data.run.stage import Reject, register_stage


def spell(
    words: list[RefWord], vocab: dict[str, int], upper: bool, cut_id: str
) -> tuple[list[int], list[int]]:
    """(token ids of every character of every spoken token, characters per spoken token)."""
    ids, lengths = [], []
    for w in words:
        for tok in w.spoken:
            chars = tok.upper() if upper else tok
            missing = sorted({c for c in chars if c not in vocab})
            if missing:
                raise Reject(
                    "unmappable_char", f"cut {cut_id}: {w.text!r} has characters the model lacks: {missing}"
                )
            ids += [vocab[c] for c in chars]
            lengths.append(len(chars))
    return ids, lengths


def ctc_token_spans(
    log_probs, targets: list[int], blank: int, frame_s: float, cut_id: str = ""
) -> list[Span]:
    """One span per target token from emissions `log_probs` [frames, vocab]: forced alignment, then
    each token's run of frames [start, end) in seconds; the score is its mean frame probability."""
    import torch
    import torchaudio.functional as F

    emission = torch.as_tensor(log_probs, dtype=torch.float32)
    frames = emission.shape[0]
    repeats = sum(1 for a, b in zip(targets, targets[1:], strict=False) if a == b)
    if frames < len(targets) + repeats:
        raise Reject("audio_too_short", f"cut {cut_id}: {frames} frames for {len(targets)} characters")
    labels, scores = F.forced_align(emission[None], torch.tensor([targets], dtype=torch.int32), blank=blank)
    spans = F.merge_tokens(labels[0], scores[0].exp(), blank=blank)
    return [Span(s.start * frame_s, s.end * frame_s, float(s.score)) for s in spans]


def group_chars(char_spans: list[Span], lengths: list[int]) -> list[Span]:
    """Character spans -> spoken-token spans (first character's start to last character's end)."""
    out, i = [], 0
    for n in lengths:
        part = char_spans[i : i + n]
        out.append(Span(part[0].start, part[-1].end, float(np.mean([s.score for s in part]))))
        i += n
    return out


def frame_seconds(config) -> float:
    """Seconds per emission frame: the feature encoder's total stride over the sampling rate."""
    return math.prod(config.conv_stride) / SAMPLE_RATE


def _check(p: dict[str, Any]) -> None:
    """At load time: the checkpoint directory holds a model, not only exists (ExistingDir)."""
    if not (Path(p["model_dir"]).expanduser() / "config.json").is_file():
        raise ValueError(
            f"model_dir={p['model_dir']!r} holds no CTC checkpoint (config.json); save a wav2vec2/MMS CTC "
            "model there with save_pretrained (model, tokenizer and feature extractor)"
        )


@register_stage("align_ctc", version=1, num_gpus=1, check=_check)
class CTCAligner(AlignerStage):
    """Word spans by CTC forced alignment on a local wav2vec2/MMS CTC checkpoint (`model_dir`)."""

    def __init__(
        self,
        model_dir: ExistingDir,
        languages: list[str] | None = None,
        device: Literal["auto", "cpu", "cuda"] = "auto",
        allow_zero_length: bool = False,
    ):
        super().__init__(allow_zero_length)
        import torch
        from transformers import AutoFeatureExtractor, AutoModelForCTC, AutoTokenizer

        path = Path(model_dir).expanduser()
        if not (path / "config.json").is_file():
            raise RuntimeError(
                f"align_ctc: {path} holds no CTC checkpoint (config.json); save a wav2vec2/MMS CTC model "
                "there with save_pretrained (model, tokenizer and feature extractor)"
            )
        torch.set_num_threads(1)
        self.device = resolve_device(device)
        self.model = AutoModelForCTC.from_pretrained(path, local_files_only=True).to(self.device).eval()
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        try:
            self.normalize = bool(
                AutoFeatureExtractor.from_pretrained(path, local_files_only=True).do_normalize
            )
        except OSError:
            self.normalize = True
        self.vocab = dict(tokenizer.get_vocab())
        letters = [c for c in self.vocab if len(c) == 1 and c.isalpha()]
        self.upper = bool(letters) and sum(c.isupper() for c in letters) > len(letters) / 2
        self.blank = self.model.config.pad_token_id if self.model.config.pad_token_id is not None else 0
        self.frame_s = frame_seconds(self.model.config)
        self.languages = tuple(languages) if languages else None
        self.source = f"model:ctc:{path.name}"

    def emissions(self, audio: np.ndarray):
        import torch

        x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
        if self.normalize:
            x = (x - x.mean()) / torch.sqrt(x.var() + 1e-7)
        with torch.inference_mode():
            logits = self.model(x[None].to(self.device)).logits[0]
        return torch.log_softmax(logits.float(), dim=-1).cpu()

    def align(self, audio: np.ndarray, words: list[RefWord], language: str, cut: Cut) -> list[Span | None]:
        ids, lengths = spell(words, self.vocab, self.upper, cut.id)
        char_spans = ctc_token_spans(self.emissions(audio), ids, self.blank, self.frame_s, cut.id)
        return word_spans_from_tokens(words, group_chars(char_spans, lengths))
