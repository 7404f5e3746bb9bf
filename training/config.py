"""Trainer configuration: one YAML file, typed sections, `--set section.key=value` overrides.

Every key is declared here with its default, so a typo in a YAML file or an override is an error
naming the key instead of a silently ignored setting (a run that trains for a day on the wrong
learning rate is the expensive kind of bug).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osum_data.yaml_config import ConfigError, brief, load_yaml_file, parse_override


@dataclass
class EncoderConfig:
    """Whisper encoder: `path` (a local Whisper model directory) or `config` (WhisperConfig kwargs
    for a randomly initialised encoder, e.g. in tests or benchmarks)."""

    path: str | None = None
    config: dict[str, Any] | None = None
    gradient_checkpointing: bool = False
    # Residual and feed-forward dropout of the encoder layers (None: the checkpoint's config, 0.0
    # for OpenAI's Whisper; OSUM trains its encoder with 0.1).
    dropout: float | None = None


@dataclass
class AdapterConfig:
    """Conv 4x downsampling (strides 1/2/2, GELU) + transformer layers + projection to the LLM width
    (training/adapters.py). `type: osum` is OSUM's adapter exactly (causal convs, Linear + LayerNorm
    input, sinusoidal positions, ReLU feed-forward, begin/end-of-speech embeddings) and loads its
    released weights. Unset keys take the type's defaults: default 4 layers x 8 heads, FFN 4 x
    d_model; osum 4 layers x 4 heads, FFN 2560; dropout 0.1; `d_model` the encoder's width."""

    type: str = "default"  # default | osum
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


@dataclass
class LLMConfig:
    """Causal LM: `path` (a local HF directory or a .gguf file, `package:NAME/FILE` for a file shipped
    in an installed package) or `config` (AutoConfig kwargs incl. model_type, random init)."""

    path: str | None = None
    config: dict[str, Any] | None = None
    tokenizer: str | None = None  # default: path
    dtype: str = "float32"  # weights of the frozen LLM: float32 | bfloat16
    gradient_checkpointing: bool = False
    attn_implementation: str | None = None  # sdpa | eager | flash_attention_2


@dataclass
class LoraConfig:
    r: int = 8
    alpha: int = 32
    dropout: float = 0.1
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj"]
    )


@dataclass
class ModelConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    lora: LoraConfig | None = None
    # Parts that train (OSUM trained in stages): any of adapter, encoder, lora, llm (full fine-tune).
    train: list[str] = field(default_factory=lambda: ["adapter"])
    # Start from the trainable weights of an earlier stage's checkpoint (weights only, fresh optimizer).
    init_from: str | None = None


@dataclass
class SpecAugmentConfig:
    """Masks drawn as WeNet/OSUM draw them: start uniform over the axis, width uniform in
    [1, max], clipped at the end. 10 frequency bins at most per mask (OSUM): the LibriSpeech
    policy's 27 of 80 bins can cover the low band where the pitch cues of gender and age live."""

    freq_masks: int = 2
    freq_width: int = 10  # max mel bins per mask
    time_masks: int = 2
    time_width: float = 0.05  # max fraction of the utterance per mask...
    time_width_frames: int | None = None  # ...or max frames per mask (OSUM: 50)
    fill: str = "mean"  # mean (of the utterance) | zero (OSUM)
    sub_masks: int = 0  # spec-sub (U2++): spans replaced by earlier frames (OSUM: 3)
    sub_width: int = 30  # max frames per spec-sub span (OSUM: 30)


@dataclass
class DataConfig:
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
    instruction: str = "stored"  # stored | pool (redraw from the task's prompt pool per sample)
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


@dataclass
class OptimConfig:
    lr: float = 5e-5
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8  # AdamW's epsilon (OSUM: 1e-6)
    warmup_steps: int = 0
    # After the linear warmup: cosine | linear (to min_lr_ratio at max_steps) | constant |
    # inverse_sqrt (lr * sqrt(warmup / step): WeNet's WarmupLR, OSUM's schedule; no floor).
    decay: str = "cosine"
    min_lr_ratio: float = 0.1
    max_steps: int = 1000
    grad_accum: int = 1
    clip: float = 1.0
    # Updates whose gradient norm is NaN/inf are skipped (and counted in the log's skipped_steps),
    # as are those above spike_factor x the running mean norm once spike_warmup updates were applied.
    skip_nonfinite: bool = True
    spike_factor: float | None = None
    spike_warmup: int = 100


@dataclass
class TrainConfig:
    log_every: int = 10
    save_every: int = 1000
    keep_checkpoints: int = 2
    eval_every: int = 0
    # With --dev: also decode the first N dev cuts at every evaluation and log WER/CER, label
    # accuracy (beside the majority baseline), timestamp error and answer F1 per task (0: off).
    eval_decode_cuts: int = 0
    tensorboard: bool = True  # DIR/tensorboard, besides train_log.jsonl
    wandb_project: str | None = None  # log to Weights & Biases too (needs `pip install wandb`)
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | bf16 | fp32
    distributed: str = "ddp"  # ddp | fsdp (only used when launched with torchrun)
    dist_backend: str | None = None  # the accelerator's collective backend (default nccl; hccl on Ascend)
    log_cut_ids: bool = False  # write cut_ids.rank<R>.jsonl (audit which rank saw what)
    # --resume: exact replays the sampler to the checkpoint (the very same batches; same world size;
    # costs a pass over the manifests up to there), fast restarts the input at its saved position
    # (no replay, any world size; the cuts in the sampler's buffer at the checkpoint are skipped).
    resume_data: str = "exact"


@dataclass
class DecodeConfig:
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
    stop_tokens: list[str] = field(default_factory=list)
    seed: int = 0  # for sampling; drawn from a forked RNG, so training's RNG stream is untouched


@dataclass
class Config:
    seed: int = 1234
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source")
        return d


PARTS = ("adapter", "encoder", "lora", "llm")


def _build(cls: type, raw: Any, where: str) -> Any:
    """Dataclass `cls` from a dict, recursively; unknown keys are errors naming their path."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {brief(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in raw.items():
        sub = _section_type(cls, name)
        if sub:
            kwargs[name] = _build(sub, value, f"{where}.{name}")
        else:
            kwargs[name] = _typed(value, hints[name], f"{where}.{name}")
    return cls(**kwargs)


_NAMES = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}


def _typed(value: Any, hint: Any, where: str) -> Any:
    """`value` checked against its field's type (before any work: `optim.lr: fast` must not reach
    torch as a string); an int where a float is declared becomes that float."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            try:
                return _typed(value, option, where)
            except ConfigError:
                continue
        wanted = " or ".join(_describe(a) for a in options) + (" or null" if type(None) in args else "")
        raise ConfigError(f"{where}: expected {wanted}, got {value!r}")
    if hint is Any:
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list of {_describe(args[0])}, got {value!r}")
        return [_typed(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return value
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is bool and isinstance(value, bool):
        return value
    if hint is str and isinstance(value, str):
        return value
    raise ConfigError(f"{where}: expected {_describe(hint)}, got {value!r}")


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is list:
        return f"a list of {_describe(typing.get_args(hint)[0])}"
    if typing.get_origin(hint) is dict:
        return "a mapping"
    return _NAMES.get(hint, getattr(hint, "__name__", str(hint)))


_SECTIONS: dict[tuple[type, str], type] = {
    (Config, "model"): ModelConfig,
    (Config, "data"): DataConfig,
    (Config, "optim"): OptimConfig,
    (Config, "train"): TrainConfig,
    (Config, "decode"): DecodeConfig,
    (ModelConfig, "encoder"): EncoderConfig,
    (ModelConfig, "adapter"): AdapterConfig,
    (ModelConfig, "llm"): LLMConfig,
    (ModelConfig, "lora"): LoraConfig,
    (DataConfig, "spec_augment"): SpecAugmentConfig,
}


def _section_type(cls: type, name: str) -> type | None:
    return _SECTIONS.get((cls, name))


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`a.b.c=value` (value parsed as YAML) into a copy of `raw`."""
    data = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[path[-1]] = value
    return data


def validate(cfg: Config) -> Config:
    bad = [p for p in cfg.model.train if p not in PARTS]
    if bad:
        raise ConfigError(f"{cfg.source}: model.train has unknown parts {bad}; choose from {PARTS}")
    if "lora" in cfg.model.train and cfg.model.lora is None:
        raise ConfigError(f"{cfg.source}: model.train includes 'lora' but model.lora is not configured")
    if "lora" in cfg.model.train and "llm" in cfg.model.train:
        raise ConfigError(f"{cfg.source}: train either 'lora' or the full 'llm', not both")
    if (cfg.model.encoder.path is None) == (cfg.model.encoder.config is None):
        raise ConfigError(f"{cfg.source}: model.encoder needs exactly one of path or config")
    if (cfg.model.llm.path is None) == (cfg.model.llm.config is None):
        raise ConfigError(f"{cfg.source}: model.llm needs exactly one of path or config")
    if cfg.model.llm.config is not None and not cfg.model.llm.tokenizer:
        raise ConfigError(f"{cfg.source}: model.llm.config (random init) needs model.llm.tokenizer")
    choices = {
        "data.instruction": (cfg.data.instruction, ("stored", "pool")),
        "optim.decay": (cfg.optim.decay, ("cosine", "linear", "constant", "inverse_sqrt")),
        "train.precision": (cfg.train.precision, ("auto", "bf16", "fp32")),
        "train.distributed": (cfg.train.distributed, ("ddp", "fsdp")),
        "model.llm.dtype": (cfg.model.llm.dtype, ("float32", "bfloat16", "float16")),
        "model.adapter.type": (cfg.model.adapter.type, ("default", "osum")),
        "train.resume_data": (cfg.train.resume_data, ("exact", "fast")),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{cfg.source}: {key} must be one of {allowed}, got {brief(value)}")
    if cfg.data.spec_augment is not None and cfg.data.spec_augment.fill not in ("mean", "zero"):
        raise ConfigError(f"{cfg.source}: data.spec_augment.fill must be mean or zero")
    if cfg.optim.decay == "inverse_sqrt" and cfg.optim.warmup_steps < 1:
        raise ConfigError(f"{cfg.source}: optim.decay inverse_sqrt needs optim.warmup_steps >= 1")
    if cfg.optim.grad_accum < 1 or cfg.optim.max_steps < 1:
        raise ConfigError(f"{cfg.source}: optim.grad_accum and optim.max_steps must be >= 1")
    return cfg


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> Config:
    cfg = _build(Config, raw, source)
    cfg.source = source
    return validate(cfg)


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    # A key given twice is an error: YAML's last-one-wins would drop the first silently.
    raw = load_yaml_file(path, unique_keys=True)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections, got a {type(raw).__name__}")
    return config_from_dict(apply_overrides(raw, overrides or []), str(path))
