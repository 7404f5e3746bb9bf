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

from osum_data.errors import OsumError, UsageError
from osum_data.manifest_io import atomic_path, dumps, open_jsonl_writer, read_jsonl
from osum_data.rejects import Reject, placeholder_record, record_code, reject_record

RUN_DIR = "run"


def run_stage(
    stage: type,
    params: dict[str, Any],
    cuts: str | Path,
    run_dir: Path,
    *,
    name: str,
    shard_size: int,
    seed: int = 0,
    workers: int | None = None,
    address: str | None = None,
    progress: bool = False,
):
    """Run the registered stage class `stage` (its `stage_name` is the name it is registered under)
    over `cuts` into `run_dir` with the pipeline runner; returns its RunResult. The Ray workers
    import the module that defines the class, which registers it there too."""
    from osum_data.run.config import build_config
    from osum_data.run.runner import run_pipeline

    config = build_config(
        {
            "name": name,
            "shard_size": shard_size,
            "seed": seed,
            "imports": [stage.__module__],
            "stages": [{"stage": stage.stage_name, **params}],
        },
        name,
    )
    return run_pipeline(config, Path(cuts), run_dir, workers=workers, address=address, progress=progress)


class ExportInputError(UsageError):
    """CUTS or OUT is none of what an export takes (exit code 2)."""


def refuse_output_over_input(out: Path, folder: Path) -> None:
    """OUT must not be (or hold) the input's folder: the export's summary.json, rejects.jsonl.gz and
    run/ would replace the input run's own (checked before anything is written)."""
    if clashing_input(out, [folder]) is not None:
        raise ExportInputError(
            f"export folder {out} is (or holds) {folder}, the input's folder: the export would overwrite "
            "its summary.json and rejects.jsonl.gz; choose another OUT"
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


class ExportCountError(OsumError):
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


# The custom key of a placeholder cut: an input line an export rejects before any work (not JSON, no
# id, a duplicate key). It goes through the run like any cut, so the run's accounting holds it; its
# stage rejects it with the code and detail it carries, and export_rejects writes the line itself.
PRE_REJECT = "export_reject"


def pre_rejected(n: int, raw: Any, reject: Reject) -> dict[str, Any]:
    """The placeholder cut of the `n`-th input item, rejected up front (a fresh id, so the runner's
    own duplicate check never sees it)."""
    info = {"code": reject.code, "detail": reject.detail, "raw": raw}
    return placeholder_record(
        f"<rejected before export: input item {n}>", "input", reject, **{PRE_REJECT: info}
    )


def check_pre_rejected(custom: dict[str, Any] | None) -> None:
    """Raise the Reject a placeholder cut carries (nothing for any other cut)."""
    pre = (custom or {}).get(PRE_REJECT)
    if pre:
        raise Reject(pre["code"], pre["detail"])


def export_rejects(run_dir: Path, dest: Path, stage: str) -> dict[str, int]:
    """The run's rejects as the export's: each names the export stage, its reason and code (an item
    rejected up front as its raw line or cut); returns the count by code."""
    counts: dict[str, int] = {}
    with open_jsonl_writer(dest) as f:
        for rec in read_jsonl(Path(run_dir) / "rejects.jsonl.gz"):
            info = (rec.get("custom") or {}).get("reject") or {}
            code = record_code(rec)
            pre = (rec.get("custom") or {}).get(PRE_REJECT)
            if pre:
                raw = pre["raw"] if isinstance(pre["raw"], dict) else {"raw": pre["raw"]}
                rec = reject_record(raw, stage, Reject(pre["code"], pre["detail"]))
            elif info.get("stage") != "input":
                info["stage"] = stage
            counts[code] = counts.get(code, 0) + 1
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
