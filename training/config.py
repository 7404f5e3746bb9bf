"""Trainer configuration: one YAML file, typed sections, `--set section.key=value` overrides.

Every key is declared here with its default, so a typo in a YAML file or an override is an error
naming the key instead of a silently ignored setting (a run that trains for a day on the wrong
learning rate is the expensive kind of bug).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osum_data.yaml_config import ConfigError, load_yaml, parse_override


@dataclass
class EncoderConfig:
    """Whisper encoder: `path` (a local Whisper model directory) or `config` (WhisperConfig kwargs
    for a randomly initialised encoder, e.g. in tests or benchmarks)."""

    path: str | None = None
    config: dict[str, Any] | None = None
    gradient_checkpointing: bool = False


@dataclass
class AdapterConfig:
    """Conv 4x downsampling (strides 1/2/2, GELU) + transformer layers + projection to the LLM width.
    `d_model` None means the encoder's width."""

    d_model: int | None = None
    layers: int = 4
    heads: int = 8
    ffn_dim: int | None = None  # default 4 * d_model
    dropout: float = 0.1


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
    freq_masks: int = 2
    freq_width: int = 27
    time_masks: int = 2
    time_width: float = 0.05  # fraction of the utterance per mask


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
    instruction: str = "stored"  # stored | pool (redraw from the task's prompt pool per sample)
    instruction_language: str = "auto"
    chat_template: bool = False
    system_prompt: str | None = None
    spec_augment: SpecAugmentConfig | None = None
    mux_seed: int = 0


@dataclass
class OptimConfig:
    lr: float = 5e-5
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 0
    decay: str = "cosine"  # cosine | linear | constant
    min_lr_ratio: float = 0.1
    max_steps: int = 1000
    grad_accum: int = 1
    clip: float = 1.0


@dataclass
class TrainConfig:
    log_every: int = 10
    save_every: int = 1000
    keep_checkpoints: int = 2
    eval_every: int = 0
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | bf16 | fp32
    distributed: str = "ddp"  # ddp | fsdp (only used when launched with torchrun)
    dist_backend: str | None = None  # the accelerator's collective backend (default nccl; hccl on Ascend)
    log_cut_ids: bool = False  # write cut_ids.rank<R>.jsonl (audit which rank saw what)


@dataclass
class DecodeConfig:
    max_new_tokens: int = 200
    max_duration: float = 200.0


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
        raise ConfigError(f"{where}: expected a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in raw.items():
        sub = _section_type(cls, name)
        kwargs[name] = _build(sub, value, f"{where}.{name}") if sub else value
    return cls(**kwargs)


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
        "optim.decay": (cfg.optim.decay, ("cosine", "linear", "constant")),
        "train.precision": (cfg.train.precision, ("auto", "bf16", "fp32")),
        "train.distributed": (cfg.train.distributed, ("ddp", "fsdp")),
        "model.llm.dtype": (cfg.model.llm.dtype, ("float32", "bfloat16", "float16")),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{cfg.source}: {key} must be one of {allowed}, got {value!r}")
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
    raw = load_yaml(path.read_text(encoding="utf-8")) or {}
    return config_from_dict(apply_overrides(raw, overrides or []), str(path))
