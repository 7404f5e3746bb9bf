"""Exporters from task-sample cut manifests to trainer formats, run on the pipeline engine
(engine.py): OSUM/WeNet raw list and shards (+ reader, data_config for mixes), NeMo, Hugging Face
datasets, ShareGPT, and the Lhotse Shar writer stage of the mix. `formats.export` is the entry point.

Names resolve lazily so that trainer-side code importing only the reader does not pay for lhotse.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_WHERE = {
    "ExportReport": "osum_data.export.osum",
    "export_osum": "osum_data.export.osum",
    "OsumSample": "osum_data.export.osum_reader",
    "read_data_list": "osum_data.export.osum_reader",
    "read_shards": "osum_data.export.osum_reader",
}
__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_WHERE[name]), name)
