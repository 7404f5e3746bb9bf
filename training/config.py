"""Trainer configuration: one YAML file, typed sections, `--set section.key=value` overrides.

Every key is declared here with its default, so a typo in a YAML file or an override is an error
naming the key instead of a silently ignored setting (a run that trains for a day on the wrong
learning rate is the expensive kind of bug). The sections are strict pydantic models, as every
other config of the toolkit: `optim.lr: fast` or `max_steps: 1.5` is refused before any work, an int
where a float is declared becomes that float, and infinities are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from osum_data.yaml_config import ConfigError, apply_overrides, explain_validation, load_yaml_file


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class EncoderConfig(_Section):
    """Whisper encoder: `path` (a local Whisper model directory) or `config` (WhisperConfig kwargs
    for a randomly initialised encoder, e.g. in tests or benchmarks)."""

    path: str | None = None
    config: dict[str, Any] | None = None
    gradient_checkpointing: bool = False
    # Residual and feed-forward dropout of the encoder layers (None: the checkpoint's config, 0.0
    # for OpenAI's Whisper; OSUM trains its encoder with 0.1).
    dropout: float | None = None


class AdapterConfig(_Section):
    """Conv 4x downsampling (strides 1/2/2, GELU) + transformer layers + projection to the LLM width
    (training/adapters.py). `type: osum` is OSUM's adapter exactly (causal convs, Linear + LayerNorm
    input, sinusoidal positions, ReLU feed-forward, begin/end-of-speech embeddings) and loads its
    released weights. Unset keys take the type's defaults: default 4 layers x 8 heads, FFN 4 x
    d_model; osum 4 layers x 4 heads, FFN 2560; dropout 0.1; `d_model` the encoder's width."""

    type: Literal["default", "osum"] = "default"
    d_model: int | None = None
    layers: int | None = None
    heads: int | None = None
    ffn_dim: int | None = None
    dropout: float | None = None

    def resolved(self) -> AdapterConfig:
        osum = self.type == "osum"
        return AdapterConfig(
            type=self.type,
            d_model=self.d_model,
            layers=4 if self.layers is None else self.layers,
            heads=self.heads or (4 if osum else 8),
            ffn_dim=self.ffn_dim or (2560 if osum else None),  # None: 4 x d_model
            dropout=0.1 if self.dropout is None else self.dropout,
        )


class LLMConfig(_Section):
    """Causal LM: `path` (a local HF directory or a .gguf file, `package:NAME/FILE` for a file shipped
    in an installed package) or `config` (AutoConfig kwargs incl. model_type, random init)."""

    path: str | None = None
    config: dict[str, Any] | None = None
    tokenizer: str | None = None  # default: path
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # weights of the frozen LLM
    gradient_checkpointing: bool = False
    attn_implementation: str | None = None  # sdpa | eager | flash_attention_2


class LoraConfig(_Section):
    r: int = 8
    alpha: int = 32
    dropout: float = 0.1
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj"]


class ModelConfig(_Section):
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    adapter: AdapterConfig = Field(default_factory=AdapterConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    lora: LoraConfig | None = None
    # Parts that train (OSUM trained in stages): any of adapter, encoder, lora, llm (full fine-tune).
    train: list[Literal["adapter", "encoder", "lora", "llm"]] = ["adapter"]
    # Start from the trainable weights of an earlier stage's checkpoint (weights only, fresh optimizer).
    init_from: str | None = None


class SpecAugmentConfig(_Section):
    """Masks drawn as WeNet/OSUM draw them: start uniform over the axis, width uniform in
    [1, max], clipped at the end. 10 frequency bins at most per mask (OSUM): the LibriSpeech
    policy's 27 of 80 bins can cover the low band where the pitch cues of gender and age live."""

    freq_masks: int = 2
    freq_width: int = 10  # max mel bins per mask
    time_masks: int = 2
    time_width: float = 0.05  # max fraction of the utterance per mask...
    time_width_frames: int | None = None  # ...or max frames per mask (OSUM: 50)
    fill: Literal["mean", "zero"] = "mean"  # mean (of the utterance) | zero (OSUM)
    sub_masks: int = 0  # spec-sub (U2++): spans replaced by earlier frames (OSUM: 3)
    sub_width: int = 30  # max frames per spec-sub span (OSUM: 30)


class DataConfig(_Section):
    sampling_rate: int = 16000
    n_mels: int = 80
    max_duration: float = 200.0  # seconds of audio per batch (padded: batch size x longest cut)
    max_tokens: int | None = None  # LLM tokens per batch (padded, estimated before tokenising)
    max_cuts: int | None = None
    num_buckets: int = 10
    bucketing: bool = True  # False: random batches (the padding benchmark's baseline)
    shuffle: bool = True
    buffer_size: int = 20000
    num_workers: int = 2
    max_cut_duration: float = 30.0  # Whisper's positional table covers 30 s
    max_target_tokens: int | None = None  # skip (and count) training cuts with longer targets (OSUM 200)
    instruction: Literal["stored", "pool"] = "stored"  # pool: redraw from the task's prompt pool per sample
    instruction_language: str = "auto"
    chat_template: bool = False
    system_prompt: str | None = None
    # The token that ends every target (default: the tokenizer's eos). OSUM ends targets with
    # Qwen2's <|endoftext|> and no chat template.
    eos_token: str | None = None
    spec_augment: SpecAugmentConfig | None = None
    mux_seed: int = 0
    # Several --train inputs: None mixes by --weights (probabilities); T > 0 by (weight x hours)^(1/T):
    # 1 is in proportion to the data, larger flattens towards uniform (training/stream.py).
    mix_temperature: float | None = None


class OptimConfig(_Section):
    lr: float = 5e-5
    weight_decay: float = 0.0
    betas: list[float] = [0.9, 0.999]
    eps: float = 1e-8  # AdamW's epsilon (OSUM: 1e-6)
    warmup_steps: int = 0
    # After the linear warmup: cosine | linear (to min_lr_ratio at max_steps) | constant |
    # inverse_sqrt (lr * sqrt(warmup / step): WeNet's WarmupLR, OSUM's schedule; no floor).
    decay: Literal["cosine", "linear", "constant", "inverse_sqrt"] = "cosine"
    min_lr_ratio: float = 0.1
    max_steps: int = 1000
    grad_accum: int = 1
    clip: float = 1.0
    # Updates whose gradient norm is NaN/inf are skipped (and counted in the log's skipped_steps),
    # as are those above spike_factor x the running mean norm once spike_warmup updates were applied.
    skip_nonfinite: bool = True
    spike_factor: float | None = None
    spike_warmup: int = 100


class TrainConfig(_Section):
    log_every: int = 10
    save_every: int = 1000
    keep_checkpoints: int = 2
    eval_every: int = 0
    # With --dev: also decode the first N dev cuts at every evaluation and log WER/CER, label
    # accuracy (beside the majority baseline), timestamp error and answer F1 per task (0: off).
    eval_decode_cuts: int = 0
    tensorboard: bool = True  # DIR/tensorboard, besides train_log.jsonl
    wandb_project: str | None = None  # log to Weights & Biases too (needs `pip install wandb`)
    # auto: bf16 autocast on CUDA, fp32 on CPU
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    distributed: Literal["ddp", "fsdp"] = "ddp"  # only used when launched with torchrun
    dist_backend: str | None = None  # the accelerator's collective backend (default nccl; hccl on Ascend)
    log_cut_ids: bool = False  # write cut_ids.rank<R>.jsonl (audit which rank saw what)
    # --resume: exact replays the sampler to the checkpoint (the very same batches; same world size;
    # costs a pass over the manifests up to there), fast restarts the input at its saved position
    # (no replay, any world size; the cuts in the sampler's buffer at the checkpoint are skipped).
    resume_data: Literal["exact", "fast"] = "exact"


class DecodeConfig(_Section):
    """transformers' `generate` options. Default greedy; OSUM decodes with beam sampling: num_beams
    4, do_sample, top_p 0.9, top_k 5, repetition_penalty 1.05, max_new_tokens 400 (osum_qwen2_7b)."""

    max_new_tokens: int = 200
    min_new_tokens: int = 0
    max_duration: float = 200.0  # seconds of audio per decoding batch
    num_beams: int = 1
    do_sample: bool = False
    top_p: float | None = None
    top_k: int | None = None
    temperature: float = 1.0
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0
    # Generation stops at the target's end token, the LLM's own end tokens (generation_config) and
    # these: instruct models end a turn with one token and a text with another (<|im_end|>,
    # <|endoftext|>).
    stop_tokens: list[str] = []
    seed: int = 0  # for sampling; drawn from a forked RNG, so training's RNG stream is untouched


class Config(_Section):
    seed: int = 1234
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    _source: str = PrivateAttr("")

    @property
    def source(self) -> str:
        """The file (or '<dict>') the config came from, for error messages."""
        return self._source

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


def _known(loc: tuple) -> list[str]:
    """The keys allowed at `loc` (a key path into Config), for the hint after an unknown key."""
    model: Any = Config
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        inner = getattr(field, "annotation", None)
        options = [inner, *getattr(inner, "__args__", ())]
        model = next((t for t in options if isinstance(t, type) and issubclass(t, BaseModel)), None)
        if model is None:
            return []
    return sorted(model.model_fields)


def _check(cfg: Config, source: str) -> Config:
    """The rules that tie keys together (each key's own type and choices are the models')."""
    m, optim = cfg.model, cfg.optim
    enc, llm = m.encoder, m.llm
    rules = {
        "model.train includes 'lora' but model.lora is not configured": "lora" in m.train and m.lora is None,
        "train either 'lora' or the full 'llm', not both": "lora" in m.train and "llm" in m.train,
        "model.encoder needs exactly one of path or config": (enc.path is None) == (enc.config is None),
        "model.llm needs exactly one of path or config": (llm.path is None) == (llm.config is None),
        "model.llm.config (random init) needs model.llm.tokenizer": bool(llm.config) and not llm.tokenizer,
        "optim.decay inverse_sqrt needs optim.warmup_steps >= 1": optim.decay == "inverse_sqrt"
        and optim.warmup_steps < 1,
        "optim.grad_accum and optim.max_steps must be >= 1": optim.grad_accum < 1 or optim.max_steps < 1,
    }
    broken = next((message for message, bad in rules.items() if bad), None)
    if broken:
        raise ConfigError(f"{source}: {broken}")
    return cfg


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> Config:
    """The validated Config of a parsed YAML mapping; any error is one ConfigError line naming
    `source` and the key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of config sections, got a {type(raw).__name__}")
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(explain_validation(e, source, _known)) from None
    cfg._source = source
    return _check(cfg, source)


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """The config file (a key given twice is an error: YAML's last-one-wins would drop the first
    silently) with the `--set` overrides applied."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    raw = load_yaml_file(path)
    return config_from_dict(apply_overrides(raw if raw is not None else {}, overrides or []), str(path))
