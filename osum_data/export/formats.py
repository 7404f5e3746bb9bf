"""`osum-data export FORMAT CUTS OUT`: one entry point and one table of the trainer formats.

CUTS is a cuts manifest, a pipeline run folder (its cuts.jsonl.gz) or a mix folder (`osum-data mix`
output). From a mix, `osum` writes per-dataset shard sets and an OSUM `data_config.yaml` with the mix's
weights (osum_config.py); `nemo`, `hf` and `sharegpt` write the mixed training set and the dev/test
sets as their splits. Every export runs as a one-stage pipeline on Ray (engine.py) and leaves
`OUT/summary.json` and `OUT/rejects.jsonl.gz`.

`FORMATS` is the table the command line and plans read: name -> driver, description, default shard
size, extra options. A format made of a `FormatStage` and a gather step needs only `run_format` in
its driver; `register_format` adds one (tests/test_exports.py adds one in a few lines).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osum_data.export.engine import (
    RUN_DIR,
    ExportInputError,
    check_on_disk,
    export_rejects,
    refuse_output_over_input,
    run_stage,
    write_summary,
)
from osum_data.export.mix_folder import mix_manifest

__all__ = ["FORMATS", "ExportFormat", "ExportInputError", "ExportJob", "export", "register_format"]


@dataclass(frozen=True)
class ExportJob:
    """One export as its driver gets it: the manifest to read (a mix's plan for a mix folder), the
    CUTS argument as given, the export folder and the run's settings; `options` holds the values of
    the format's own options (by name: `--shards` -> `shards`)."""

    format: str
    manifest: Path
    source: Path
    is_mix: bool
    out: Path
    shard_size: int
    relative: bool = False
    workers: int | None = None
    address: str | None = None
    progress: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportFormat:
    """One row of the table: `driver(job)` writes the export and returns its summary."""

    name: str
    description: str
    driver: Callable[[ExportJob], dict[str, Any]]
    shard_size: int = 1000
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # CLI flag -> argparse kwargs
    audited: bool = False  # the CLI audits what was written (osum_data.audit)
    text: Callable[[dict[str, Any]], str] | None = None  # the terminal's paragraph (default: describe)

    def describe(self, summary: dict[str, Any]) -> str:
        return (self.text or describe)(summary)

    def option_names(self) -> list[str]:
        return [flag.lstrip("-").replace("-", "_") for flag in self.options]


FORMATS: dict[str, ExportFormat] = {}


def register_format(fmt: ExportFormat) -> ExportFormat:
    """Add a format to the table (a name already there is an error: formats are not replaced)."""
    if fmt.name in FORMATS:
        raise ValueError(f"export format {fmt.name!r} registered twice")
    FORMATS[fmt.name] = fmt
    return fmt


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
        plan = mix_manifest(p)
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


def export(
    fmt: str,
    cuts: str | Path,
    out: str | Path,
    *,
    shard_size: int | None = None,
    relative: bool = False,
    workers: int | None = None,
    address: str | None = None,
    progress: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Export and return the export's summary (also written to OUT/summary.json). `options`: the
    format's own (osum: `shards`, `dialect`); options another format declares are ignored."""
    if fmt not in FORMATS:
        raise ExportInputError(f"unknown export format {fmt!r}; formats: {', '.join(FORMATS)}")
    row = FORMATS[fmt]
    out = Path(os.path.abspath(out))
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"export folder {out} is a file; give a directory")
    manifest, is_mix = resolve_input(cuts)
    refuse_output_over_input(out, Path(cuts) if is_mix else manifest.parent)
    job = ExportJob(
        format=fmt,
        manifest=manifest,
        source=Path(cuts),
        is_mix=is_mix,
        out=out,
        shard_size=shard_size or row.shard_size,
        relative=relative,
        workers=workers,
        address=address,
        progress=progress,
        options={name: options.get(name) for name in row.option_names()},
    )
    return row.driver(job)


def run_format(
    job: ExportJob, stage: type, params: dict[str, Any], gather: Callable[[int], dict[str, int]]
) -> dict[str, Any]:
    """The driver of a `FormatStage` format: run `stage` over the manifest, `gather(shards)` the
    shards' files into OUT (returns samples per split), check them against the run, write the
    rejects and the summary."""
    run = run_stage(
        stage,
        params,
        job.manifest,
        job.out / RUN_DIR,
        name=f"export-{stage.stage_name}",
        shard_size=job.shard_size,
        workers=job.workers,
        address=job.address,
        progress=job.progress,
    ).summary
    splits = gather(run["shards"])
    # What is on disk, not what the run believes it kept: they must agree, or the export fails.
    exported = check_on_disk(f"export {job.format} to {job.out}", sum(splits.values()), run["out"])
    counters = next((s.get("counters", {}) for s in run["stages"] if s["stage"] == stage.stage_name), {})
    reasons = export_rejects(job.out / RUN_DIR, job.out / "rejects.jsonl.gz", stage.stage_name)
    summary = {
        "type": "export",
        "format": job.format,
        "input": str(job.manifest),
        "out_dir": str(job.out),
        "relative": job.relative,
        "cuts": run["in"],
        "exported": exported,
        "rejected": run["rejected"],
        "rejected_by_reason": reasons,
        "reasons": reasons,  # the same counts under the OSUM export's key: every format has both
        "hours": round(float(counters.get("seconds", 0.0)) / 3600, 6),
        "splits": splits,
        "hours_by_task": run.get("hours_by_task", {}),
    }
    write_summary(job.out, summary)
    return summary


# --- the formats -------------------------------------------------------------------------------
# Drivers import their modules when they run: the command line reads this table at start-up without
# loading lhotse, datasets or the audio stack.


def _osum(job: ExportJob) -> dict[str, Any]:
    from osum_data.export.osum_dialect import DEFAULT_DIALECT, load_dialect

    dialect = job.options.get("dialect") or DEFAULT_DIALECT
    load_dialect(dialect)  # an unknown name fails before anything is read
    if job.is_mix:
        from osum_data.export.osum_config import export_osum_mix

        return export_osum_mix(
            job.source, job.out, job.shard_size, job.relative, job.workers, job.address, job.progress, dialect
        )
    from osum_data.export.osum import export_osum

    export_osum(
        job.manifest,
        job.out,
        shards=bool(job.options.get("shards")),
        shard_size=job.shard_size,
        num_workers=job.workers,
        relative=job.relative,
        address=job.address,
        progress=job.progress,
        dialect=dialect,
    )
    return json.loads((job.out / "summary.json").read_text())


def _nemo(job: ExportJob) -> dict[str, Any]:
    from osum_data.export.nemo import ExportNemo, gather_nemo

    params = {"out_dir": str(job.out), "relative": job.relative}
    return run_format(job, ExportNemo, params, lambda n: gather_nemo(job.out, n, job.relative))


def _hf(job: ExportJob) -> dict[str, Any]:
    from osum_data.export.hf import ExportHF, gather_hf

    return run_format(job, ExportHF, {}, lambda n: gather_hf(job.out, n))


def _sharegpt(job: ExportJob) -> dict[str, Any]:
    from osum_data.export.sharegpt import ExportShareGPT, gather_sharegpt

    params = {"out_dir": str(job.out), "relative": job.relative}
    return run_format(job, ExportShareGPT, params, lambda n: gather_sharegpt(job.out, n))


def _osum_text(summary: dict[str, Any]) -> str:
    """The OSUM export's own account (referenced vs materialised audio); a mix's: describe."""
    if "data_config" in summary:
        return describe(summary)
    from osum_data.export.osum import ExportReport

    fields = ExportReport.__dataclass_fields__
    return ExportReport(**{k: v for k, v in summary.items() if k in fields}).summary()


OSUM_OPTIONS = {
    "--shards": {"action": "store_true", "help": "also write tar shards"},
    "--dialect": {
        "choices": ("osum", "echat"),
        "default": "echat",
        "help": "OSUM trainer to write for: osum (v1: its 11 task keys) or echat (OSUM-EChat: X-only "
        "keys, <ANGER>, extra.age/gender tags); see osum_data/export/osum_dialects.yaml",
    },
}
for _row in (
    ExportFormat(
        "osum",
        "OSUM/WeNet raw list data.list (+ tar shards); from a mix folder: data_config.yaml",
        _osum,
        options=OSUM_OPTIONS,
        audited=True,
        text=_osum_text,
    ),
    ExportFormat(
        "nemo", "NeMo: speechlm2-style Lhotse cuts (instruction in `context`) and a JSON manifest", _nemo
    ),
    ExportFormat("hf", "Hugging Face datasets: Parquet with the Audio feature", _hf, shard_size=500),
    ExportFormat("sharegpt", "ShareGPT / LLaMA-Factory: messages + audios, dataset_info.json", _sharegpt),
):
    register_format(_row)


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
