"""Loading torch files from untrusted places: tensors and plain data only, nothing that runs.

`torch.load(weights_only=True)` builds no Python object but tensors, dicts, lists, tuples, numbers
and strings; a file whose pickle names anything else (`__reduce__` to `os.system`, ...) is refused
with one line naming the file. A low module: checkpoints, Whisper weights and OSUM's infer.pt all
load through it.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from osum_data.errors import OsumError


class UnsafeCheckpoint(OsumError, ValueError):
    """A checkpoint file that holds more than tensors and plain data (it could run code): exit 1."""


def safe_load(path: Path) -> Any:
    """`torch.load` that builds nothing but tensors and plain data; a file whose pickle names any
    other Python object is an UnsafeCheckpoint naming the file (torch's own message is many lines)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = next((ln.strip() for ln in str(e).splitlines() if "GLOBAL" in ln or "global" in ln), "")
        raise UnsafeCheckpoint(
            f"{path}: refused: it holds Python objects other than tensors and plain data, which could "
            f"run code when loaded ({first[:160] or type(e).__name__}); use checkpoints you made or trust"
        ) from None
