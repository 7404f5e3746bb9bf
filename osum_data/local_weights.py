"""A `.gguf` file as a Hugging Face directory, converted once and cached: shared by the embedded LLM
server and the trainer (`training/weights.py`), so both load the same bundled SmolLM2 the same way.

Loading a GGUF with transformers dequantises every tensor (seconds per process, and the trainer
starts one process per GPU, the server one per run); the converted directory loads in a fraction of
that. The cache lives under the user's cache root (`$OSUM_CACHE` or `~/.cache/osum-data`), keyed by
the file's path, size and mtime, and each conversion is written to a temporary folder and renamed,
so concurrent processes never see half a directory. Nothing here reaches a model hub. It sits at
the package top, outside `osum_data.llm` (whose package imports the client and lhotse), because
the GPU benchmark loads the model on machines without lhotse (bench/train_gpu.py).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

# Belt and braces: even a call we forgot to mark local_files_only must not reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def cache_root() -> Path:
    return Path(os.environ.get("OSUM_CACHE", Path.home() / ".cache" / "osum-data"))


def gguf_cache_dir(gguf: Path, kind: str) -> Path:
    """Where the conversion of `gguf` into `kind` ("model" or "tokenizer") is cached."""
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / "gguf" / f"{gguf.stem}-{key}" / kind


def convert_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Run `build(tmp_dir)` unless `target` exists; atomic so concurrent processes don't clash."""
    if (target / ".done").exists():
        return target
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        build(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / ".done").touch()
    try:
        os.replace(tmp, target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def gguf_tokenizer_dir(gguf: Path) -> Path:
    """The tokenizer stored in `gguf` (vocabulary, merges, chat template) as a cached HF directory."""

    def build(tmp: Path) -> None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
        tok.save_pretrained(tmp)

    return convert_once(gguf_cache_dir(gguf, "tokenizer"), build)


def gguf_model_dir(gguf: Path) -> Path:
    """The weights of `gguf`, dequantised to float32, as a cached HF directory (safetensors)."""

    def build(tmp: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        m = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, local_files_only=True, dtype=torch.float32
        )
        # The tensors are dequantised already; drop the GGUF marker that forbids saving them.
        m.hf_quantizer = None
        if hasattr(m.config, "quantization_config"):
            del m.config.quantization_config
        m.save_pretrained(tmp)

    return convert_once(gguf_cache_dir(gguf, "model"), build)
