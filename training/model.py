"""The speech LLM: Whisper encoder -> adapter -> any Hugging Face causal LM (LoRA optional).

Layout of one sample in the LLM (DESIGN section 8):  [prefix/instruction] [speech] [suffix] [target eos].
Speech embeddings replace placeholder positions of the token sequence (masked_scatter), so a batch
is one `inputs_embeds` tensor and the LLM stays an unmodified HF model.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from osum_data.errors import UsageError
from training.adapters import (
    ADAPTERS,
    Adapter,
    OsumAdapter,
    conv_out,
    padding_mask,
    zero_padding,
)
from training.config import Config


def speech_boundary_tokens(cfg: Config) -> int:
    return ADAPTERS[cfg.model.adapter.type].boundary_tokens


class ShortWhisperEncoder(WhisperEncoder):
    """HF's Whisper encoder with a forward that takes any length up to 30 s.

    HF's forward rejects inputs that are not exactly 3000 frames, so callers pad every cut to 30 s
    (most of the compute on short utterances). Here the positional table is sliced to the input
    length and padded frames of a batch are masked out of attention. Parameter names are those of
    WhisperEncoder, so Whisper checkpoints load unchanged.
    """

    def forward(self, input_features: torch.Tensor, lengths: torch.Tensor | None = None):  # type: ignore[override]
        if lengths is None:
            lengths = torch.full((input_features.shape[0],), input_features.shape[-1])
        x = F.gelu(self.conv1(zero_padding(input_features, lengths)))
        x = F.gelu(self.conv2(zero_padding(x, lengths))).permute(0, 2, 1)
        n = x.shape[1]
        if n > self.max_source_positions:
            raise ValueError(
                f"input of {input_features.shape[-1]} mel frames exceeds Whisper's "
                f"{2 * self.max_source_positions} (30 s); filter long cuts (data.max_cut_duration)"
            )
        x = x + self.embed_positions.weight[:n].to(x.dtype)
        x = F.dropout(x, p=self.dropout, training=self.training)
        out_lens = conv_out(lengths, 2)
        mask = None
        pad = padding_mask(out_lens.to(x.device), n)
        if pad.any():
            mask = torch.zeros(x.shape[0], 1, 1, n, dtype=x.dtype, device=x.device)
            mask = mask.masked_fill(pad[:, None, None, :], torch.finfo(x.dtype).min)
        for layer in self.layers:
            if self.gradient_checkpointing and self.training:
                x = checkpoint(layer, x, mask, use_reentrant=False)
            else:
                x = layer(x, mask)
        return self.layer_norm(x), out_lens


class SpeechLLM(nn.Module):
    def __init__(self, encoder: ShortWhisperEncoder, adapter: Adapter | OsumAdapter, llm: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.adapter = adapter
        self.llm = llm  # a PreTrainedModel, or a peft PeftModel wrapping one

    @property
    def causal_lm(self) -> nn.Module:
        """The HF model under a peft wrapper (LoRA layers are injected into it in place)."""
        return self.llm.get_base_model() if hasattr(self.llm, "get_base_model") else self.llm

    def encode_speech(self, mel: torch.Tensor, mel_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S, H_llm) speech embeddings and their lengths."""
        x, lens = self.encoder(mel, mel_lens)
        return self.adapter(x, lens)

    def embed(self, batch: dict[str, Any]) -> torch.Tensor:
        """Token embeddings with the speech embeddings scattered into the placeholder positions."""
        lm = self.causal_lm
        embeds = lm.get_input_embeddings()(batch["input_ids"])
        speech, lens = self.encode_speech(batch["mel"], batch["mel_lens"])
        valid = ~padding_mask(lens, speech.shape[1])
        flat = speech[valid]
        mask = batch["speech_mask"]
        if flat.shape[0] != int(mask.sum()):
            raise ValueError(f"{flat.shape[0]} speech embeddings for {int(mask.sum())} placeholder positions")
        return embeds.masked_scatter(mask.unsqueeze(-1), flat.to(embeds.dtype))

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Loss on target tokens only. Logits are computed at those positions alone: with a 150k
        vocabulary, full (B, L, V) logits would dominate memory."""
        lm = self.causal_lm
        embeds = self.embed(batch)
        hidden = lm.get_decoder()(
            inputs_embeds=embeds, attention_mask=batch["attention_mask"]
        ).last_hidden_state
        labels = batch["labels"][:, 1:]
        sel = labels != -100
        logits = lm.get_output_embeddings()(hidden[:, :-1][sel]).float()
        tok_loss = F.cross_entropy(logits, labels[sel], reduction="none")
        rows = sel.nonzero()[:, 0]
        per_sample = torch.zeros(labels.shape[0], device=tok_loss.device).index_add(
            0, rows, tok_loss.detach()
        )
        return {"loss": tok_loss.mean(), "sample_loss_sum": per_sample, "sample_tokens": sel.sum(1)}

    @torch.no_grad()
    def generate(
        self, batch: dict[str, Any], options: Any, stop_ids: list[int], pad_id: int, synced: bool = False
    ) -> list[list[int]]:
        """Token ids generated for a left-padded batch ([pad][prefix][speech][suffix]) by transformers'
        `generate` on the speech-filled `inputs_embeds`: greedy, beam search or sampling as `options`
        (a DecodeConfig) says; each row ends before its first stop token. `synced`: keep stepping
        until every rank is done (FSDP: every rank must join every forward)."""
        from transformers import GenerationConfig

        o = options
        sampling = dict(top_p=o.top_p, top_k=o.top_k, temperature=o.temperature) if o.do_sample else {}
        gen = GenerationConfig(
            max_new_tokens=o.max_new_tokens,
            min_new_tokens=o.min_new_tokens,
            num_beams=o.num_beams,
            do_sample=o.do_sample,
            repetition_penalty=o.repetition_penalty,
            length_penalty=o.length_penalty,
            eos_token_id=list(stop_ids),
            pad_token_id=pad_id,
            use_cache=True,  # even when training turned it off for gradient checkpointing
            **sampling,
        )
        embeds = self.embed(batch)
        out = self.causal_lm.generate(
            inputs_embeds=embeds,
            attention_mask=batch["attention_mask"],
            generation_config=gen,
            synced_gpus=synced,
        )
        stops = set(stop_ids)
        result = []
        for row in out.tolist():
            end = next((i for i, t in enumerate(row) if t in stops), len(row))
            result.append(row[:end])
        return result


def build_model(cfg: Config, with_tokenizer: bool = True) -> tuple[SpeechLLM, Any]:
    """Model and tokenizer from the config; weights from local paths only; parts frozen or trainable
    as `model.train` says. Random initialisation is seeded by `cfg.seed` (so frozen random parts
    come back identical when a run resumes). Build under `with torch.device("cuda"):` to initialise
    a large random model on the GPU directly. `with_tokenizer=False` (benchmarks) returns None."""
    from training.weights import load_causal_lm, load_tokenizer, load_whisper_encoder

    m = cfg.model
    torch.manual_seed(cfg.seed)
    enc_cfg, enc_state = load_whisper_encoder(m.encoder.path, m.encoder.config)
    if m.encoder.dropout is not None:
        enc_cfg.dropout = enc_cfg.activation_dropout = m.encoder.dropout
    if enc_cfg.num_mel_bins != cfg.data.n_mels:
        raise UsageError(f"encoder has {enc_cfg.num_mel_bins} mel bins, data.n_mels is {cfg.data.n_mels}")
    encoder = ShortWhisperEncoder(enc_cfg)
    if enc_state is not None:
        missing, unexpected = encoder.load_state_dict(enc_state, strict=False)
        if [k for k in missing if k != "embed_positions.weight"] or unexpected:
            raise UsageError(
                f"Whisper encoder weights do not fit: missing {missing}, unexpected {unexpected}"
            )
    encoder.gradient_checkpointing = m.encoder.gradient_checkpointing

    tokenizer = load_tokenizer(m.llm.tokenizer or m.llm.path) if with_tokenizer else None
    llm = load_causal_lm(m.llm.path, m.llm.config, m.llm.dtype, m.llm.attn_implementation)
    if tokenizer is not None and len(tokenizer) > llm.get_input_embeddings().num_embeddings:
        raise UsageError(
            f"tokenizer has {len(tokenizer)} tokens, the LLM only {llm.get_input_embeddings().num_embeddings}"
        )
    if m.llm.gradient_checkpointing:
        llm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        llm.config.use_cache = False

    a = m.adapter.resolved()
    d_model = a.d_model or enc_cfg.d_model
    adapter = ADAPTERS[a.type](
        enc_cfg.d_model,
        d_model,
        llm.config.hidden_size,
        a.layers,
        a.heads,
        a.ffn_dim or 4 * d_model,
        a.dropout,
    )
    if m.lora is not None and "lora" in m.train:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=m.lora.r,
            lora_alpha=m.lora.alpha,
            lora_dropout=m.lora.dropout,
            target_modules=list(m.lora.target_modules),
            task_type="CAUSAL_LM",
        )
        with warnings.catch_warnings():  # peft probes a property transformers has deprecated
            warnings.filterwarnings("ignore", ".*is_gradient_checkpointing.*", FutureWarning)
            llm = get_peft_model(llm, lora)
    model = SpeechLLM(encoder, adapter, llm)
    set_trainable(model, m.train)
    return model, tokenizer


def set_trainable(model: SpeechLLM, parts: list[str]) -> None:
    """Freeze everything, then unfreeze the named parts (adapter, encoder, lora, llm)."""
    model.requires_grad_(False)
    if "adapter" in parts:
        model.adapter.requires_grad_(True)
    if "encoder" in parts:
        model.encoder.requires_grad_(True)
        model.encoder.embed_positions.requires_grad_(False)  # Whisper's fixed sinusoids
    if "llm" in parts:
        model.llm.requires_grad_(True)
    if "lora" in parts:
        for name, p in model.llm.named_parameters():
            if "lora_" in name:
                p.requires_grad_(True)


def count_parameters(model: nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}
