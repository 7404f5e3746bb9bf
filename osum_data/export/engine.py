"""Exports on the pipeline engine: one export stage run by the Ray runner, then a gather step.

An export is a one-stage pipeline over the cuts manifest. The runner brings what every pipeline
has: Ray workers (local or `--address` cluster), shards written atomically, resume of a killed
export from its finished shards, isolation of cuts that kill a worker, and the accounting
`in = out + rejected`. The stage writes each shard's files (audio, tars, Parquet, list pieces) into
its shard's files directory (`RUN/files/NNNNNN/<stage>/`); the gather step then links them into the
export's final layout (hard links: no copy, and the run keeps its own copy for resume) and
concatenates the per-shard lists in shard order, so the result is the same bytes whatever the
number of workers.

Layout of an export folder `OUT/`: the format's files, `rejects.jsonl.gz`, `summary.json`, and
`run/` (the runner's folder: shards, files, its own summary).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from osum_data.manifest_io import atomic_path, dumps, open_jsonl_writer, read_jsonl

RUN_DIR = "run"


def run_export_stage(
    stage: str,
    params: dict[str, Any],
    cuts: str | Path,
    out: Path,
    *,
    shard_size: int,
    workers: int | None = None,
    address: str | None = None,
    progress: bool = False,
    imports: list[str] | None = None,
):
    """Run `stage` over `cuts` into `out/run` with the pipeline runner; returns its RunResult.
    `imports` names the module that registers the stage (Ray workers import it too)."""
    from osum_data.run.config import build_config
    from osum_data.run.runner import run_pipeline

    config = build_config(
        {
            "name": f"export-{stage}",
            "shard_size": shard_size,
            "imports": list(imports or []),
            "stages": [{"stage": stage, **params}],
        },
        f"export {stage}",
    )
    return run_pipeline(
        config, Path(cuts), out / RUN_DIR, workers=workers, address=address, progress=progress
    )


def clashing_input(out: Path, inputs: Iterable[Path]) -> Path | None:
    """The first input folder that `out` is or contains, else None. Writing an export or a mix there
    would replace that run's summary.json and rejects.jsonl.gz (or its files) with ours."""
    target = Path(os.path.abspath(out)).resolve()
    for folder in inputs:
        f = Path(os.path.abspath(folder)).resolve()
        if f == target or target in f.parents:
            return Path(folder)
    return None


def shard_dirs(run_dir: Path, stage: str, shards: int) -> Iterator[tuple[int, Path]]:
    """(shard index, that shard's files directory of `stage`) in shard order, where it exists."""
    for i in range(shards):
        d = Path(run_dir) / "files" / f"{i:06d}" / stage
        if d.is_dir():
            yield i, d


def link(src: Path, dst: Path) -> None:
    """Place `src` at `dst` without copying bytes when the file system allows it."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not supported
        shutil.copy2(src, dst)


def concat_text(parts: list[Path], dest: Path) -> int:
    """Concatenate text pieces into `dest` atomically; returns the number of lines."""
    lines = 0
    with atomic_path(dest) as tmp, open(tmp, "wb") as out:
        for p in parts:
            data = p.read_bytes()
            lines += data.count(b"\n")
            out.write(data)
    return lines


def export_rejects(run_dir: Path, dest: Path, stage: str) -> dict[str, int]:
    """The run's rejects as the export's: each names the export stage and its reason; returns the
    count by reason code."""
    counts: dict[str, int] = {}
    with open_jsonl_writer(dest) as f:
        for rec in read_jsonl(Path(run_dir) / "rejects.jsonl.gz"):
            reject = rec.get("custom", {}).get("reject", {})
            code = reject.get("code", "rejected")
            counts[code] = counts.get(code, 0) + 1
            reject["stage"] = stage if reject.get("stage") != "input" else reject["stage"]
            f.write(dumps(rec) + "\n")
    return dict(sorted(counts.items()))


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")


def relative_or_absolute(path: Path, root: Path, relative: bool) -> str:
    return os.path.relpath(path, root) if relative else str(Path(os.path.abspath(path)))


def concat_files(parts: list[Path], dest: Path) -> None:
    """Byte-concatenate files (gzip members included: the result is one valid gzip stream)."""
    with atomic_path(dest) as tmp, open(tmp, "wb") as out:
        for p in parts:
            with open(p, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)


def zero_gzip_mtime(path: Path) -> None:
    """Set a gzip file's header time to 0 in place (RFC 1952: bytes 4-7; no header CRC is written),
    so files lhotse's writers compress are the same bytes for the same content, like ours."""
    with open(path, "r+b") as f:
        head = f.read(10)
        if len(head) == 10 and head[:2] == b"\x1f\x8b" and not head[3] & 0x02:  # FHCRC unset
            f.seek(4)
            f.write(b"\0\0\0\0")
