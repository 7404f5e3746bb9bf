"""`osum-data export FORMAT CUTS OUT`: one entry point for the four trainer formats.

CUTS is a cuts manifest, a pipeline run folder (its cuts.jsonl.gz) or a mix folder (`osum-data mix`
output). From a mix, `osum` writes per-dataset shard sets and an OSUM `data_config.yaml` with the mix's
weights (osum_config.py); `nemo`, `hf` and `sharegpt` write the mixed training set and the dev/test
sets as their splits. Every export runs as a one-stage pipeline on Ray (engine.py) and leaves
`OUT/summary.json` and `OUT/rejects.jsonl.gz`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from osum_data.export.engine import (
    RUN_DIR,
    clashing_input,
    export_rejects,
    run_export_stage,
    write_summary,
)

FORMATS = ("osum", "nemo", "hf", "sharegpt")
DEFAULT_SHARD_SIZE = {"osum": 1000, "nemo": 1000, "hf": 500, "sharegpt": 1000}


class ExportInputError(ValueError):
    """CUTS is none of the inputs an export takes."""


def mix_folder(path: Path) -> bool:
    """Whether `path` is a mix folder; a summary.json that is not JSON is an ExportInputError (a run or
    mix folder whose summary is broken must not pass for something else)."""
    summary = path / "summary.json"
    if not summary.is_file():
        return False
    try:
        data = json.loads(summary.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportInputError(f"{summary}: not valid JSON ({e}); run the mix or pipeline again") from None
    return isinstance(data, dict) and data.get("type") == "mix"


def resolve_input(cuts: str | Path) -> tuple[Path, bool]:
    """(cuts manifest to export, whether it is a mix's plan)."""
    p = Path(cuts)
    if p.is_file():
        return p, False
    if p.is_dir() and mix_folder(p):
        plan = p / "plan" / "mix.jsonl.gz"
        if not plan.exists():
            raise ExportInputError(
                f"{p} is a mix folder without plan/mix.jsonl.gz; run `osum-data mix` again"
            )
        return plan, True
    if p.is_dir() and (p / "cuts.jsonl.gz").exists():
        return p / "cuts.jsonl.gz", False
    if p.is_dir() and sorted(p.glob("cuts.*.jsonl.gz")):
        raise ExportInputError(
            f"{p} is a Lhotse Shar folder: export the mix folder above it (or the manifest it came from)"
        )
    raise ExportInputError(f"{p}: not a cuts manifest, a run folder (cuts.jsonl.gz) or a mix folder")


def refuse_output_over_input(out: Path, folder: Path) -> None:
    """OUT must not be (or hold) the input's folder: the export's summary.json, rejects.jsonl.gz and
    run/ would replace the input run's own (checked before anything is written)."""
    if clashing_input(out, [folder]) is not None:
        raise ExportInputError(
            f"export folder {out} is (or holds) {folder}, the input's folder: the export would overwrite "
            "its summary.json and rejects.jsonl.gz; choose another OUT"
        )


def export(
    fmt: str,
    cuts: str | Path,
    out: str | Path,
    *,
    shards: bool = False,
    shard_size: int | None = None,
    relative: bool = False,
    workers: int | None = None,
    address: str | None = None,
    progress: bool = False,
    dialect: str | None = None,
) -> dict[str, Any]:
    """Export and return the export's summary (also written to OUT/summary.json). `dialect`: the OSUM
    trainer the `osum` format writes for (osum_dialects.yaml; default echat)."""
    if fmt not in FORMATS:
        raise ExportInputError(f"unknown export format {fmt!r}; formats: {', '.join(FORMATS)}")
    size = shard_size or DEFAULT_SHARD_SIZE[fmt]
    out = Path(os.path.abspath(out))
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"export folder {out} is a file; give a directory")
    manifest, is_mix = resolve_input(cuts)
    refuse_output_over_input(out, Path(cuts) if is_mix else manifest.parent)
    if fmt == "osum":
        from osum_data.export.osum_dialect import DEFAULT_DIALECT, load_dialect

        dialect = dialect or DEFAULT_DIALECT
        load_dialect(dialect)  # an unknown name fails before anything is read
        if is_mix:
            from osum_data.export.osum_config import export_osum_mix

            return export_osum_mix(Path(cuts), out, size, relative, workers, address, progress, dialect)
        from osum_data.export.osum import export_osum

        export_osum(
            manifest,
            out,
            shards=shards,
            shard_size=size,
            num_workers=workers,
            relative=relative,
            address=address,
            progress=progress,
            dialect=dialect,
        )
        return json.loads((out / "summary.json").read_text())
    stage, module, params = _stage(fmt, out, relative)
    result = run_export_stage(
        stage,
        params,
        manifest,
        out,
        shard_size=size,
        workers=workers,
        address=address,
        progress=progress,
        imports=[module],
    )
    run = result.summary
    if fmt == "nemo":
        from osum_data.export.nemo import gather_nemo

        splits = gather_nemo(out, run["shards"], relative)
    elif fmt == "hf":
        from osum_data.export.hf import gather_hf

        splits = gather_hf(out, run["shards"])
    else:
        from osum_data.export.sharegpt import gather_sharegpt

        splits = gather_sharegpt(out, run["shards"])
    counters = next((s.get("counters", {}) for s in run["stages"] if s["stage"] == stage), {})
    reasons = export_rejects(out / RUN_DIR, out / "rejects.jsonl.gz", stage)
    summary = {
        "type": "export",
        "format": fmt,
        "input": str(manifest),
        "out_dir": str(out),
        "relative": relative,
        "cuts": run["in"],
        "exported": run["out"],
        "rejected": run["rejected"],
        "rejected_by_reason": reasons,
        "reasons": reasons,  # the same counts under the OSUM export's key: every format has both
        "hours": round(float(counters.get("seconds", 0.0)) / 3600, 6),
        "splits": splits,
        "hours_by_task": run.get("hours_by_task", {}),
    }
    write_summary(out, summary)
    return summary


def _stage(fmt: str, out: Path, relative: bool) -> tuple[str, str, dict[str, Any]]:
    if fmt == "nemo":
        return "export_nemo", "osum_data.export.nemo", {"out_dir": str(out), "relative": relative}
    if fmt == "hf":
        return "export_hf", "osum_data.export.hf", {}
    return "export_sharegpt", "osum_data.export.sharegpt", {"out_dir": str(out), "relative": relative}


def describe(summary: dict[str, Any]) -> str:
    """One paragraph for the terminal."""
    text = (
        f"Exported {summary.get('exported', 0):,} of {summary.get('cuts', 0):,} cuts as {summary['format']} "
        f"to {summary.get('out_dir', '')}"
    )
    if summary.get("splits"):
        text += " (" + ", ".join(f"{k}: {v}" for k, v in summary["splits"].items()) + ")"
    if summary.get("data_config"):
        # OSUM repeats shards by weight at training time, so the export holds each training cut once:
        # its count differs from the realised mix's, and saying so avoids a false alarm of loss.
        unique = sum(int(entry.get("cuts", 0)) for entry in summary["data_config"].values())
        text += (
            f"; data_config.yaml lists {len(summary['data_config'])} shard set(s) of {unique:,} unique "
            f"training cuts that OSUM repeats by the mix's weights, "
            f"plus {summary.get('cuts', 0) - unique:,} dev/test cuts"
        )
    if summary.get("rejected"):
        text += f". Rejected {summary['rejected']:,}: see rejects.jsonl.gz"
    return text + "."
