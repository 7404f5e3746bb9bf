"""Exporters from task-sample cut manifests to trainer formats, run on the pipeline engine
(engine.py): OSUM/WeNet raw list and shards (+ reader, data_config for mixes), NeMo, Hugging Face
datasets, ShareGPT, and the Lhotse Shar writer stage of the mix. `formats.export` is the entry point
and `formats.FORMATS` the table of formats.

Names resolve lazily so that trainer-side code importing only the reader does not pay for lhotse.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ExportReport", "OsumSample", "export_osum", "read_data_list", "read_shards"]


def __getattr__(name: str) -> Any:
    if name in ("OsumSample", "read_data_list", "read_shards"):
        from osum_data.export import osum_reader

        return getattr(osum_reader, name)
    if name in ("ExportReport", "export_osum"):
        from osum_data.export import osum

        return getattr(osum, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
