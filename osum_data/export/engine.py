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
from contextlib import contextmanager
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


PART_PREFIX = "part-"


@contextmanager
def call_part(files_dir: Path) -> Iterator[Path]:
    """A fresh folder for the files of one call of an export stage, published as the shard's next
    `part-NNNNNN/` when the call returns, removed when it raises.

    The runner retries a batch that raised one cut per call, in the same files folder; a stage that
    emptied the folder on each call kept only the last cut's files (issue 20 item 6). With one part
    per successful call nothing a kept cut wrote is lost and nothing a failed call wrote is kept; a
    call that wrote nothing publishes no part. A restarted shard starts from an empty files folder
    (the runner clears it), so part numbers restart at 0 and the output is the same bytes."""
    files_dir = Path(files_dir)
    n = sum(1 for p in files_dir.iterdir() if p.is_dir() and p.name.startswith(PART_PREFIX))
    final = files_dir / f"{PART_PREFIX}{n:06d}"
    tmp = files_dir / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if any(tmp.iterdir()):
        os.replace(tmp, final)
    else:
        tmp.rmdir()


def part_dirs(run_dir: Path, stage: str, shards: int) -> Iterator[tuple[int, Path]]:
    """(shard index, one published part of that shard's `stage` files) in shard order, then part
    order: the order the parts' cuts had in the input."""
    for i, d in shard_dirs(run_dir, stage, shards):
        for part in sorted(p for p in d.iterdir() if p.is_dir() and p.name.startswith(PART_PREFIX)):
            yield i, part


class ExportCountError(RuntimeError):
    """The files an export gathered hold a different number of samples than the run kept."""


def check_on_disk(what: str, on_disk: int, kept: int) -> int:
    """The count of samples written, which must be the run's count of kept cuts: the summary counts
    what is on disk, and a shortfall is an error rather than an export that claims cuts it lost."""
    if on_disk != kept:
        raise ExportCountError(
            f"{what}: the export files hold {on_disk} sample(s) but {kept} cut(s) were kept; "
            "the export is incomplete (run it again into an empty folder, and report this)"
        )
    return on_disk


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
