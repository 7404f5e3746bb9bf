"""A run's output directory: one run at a time, no mixing of runs, merging the shard files.

Layout: `cuts.jsonl.gz`, `rejects.jsonl.gz`, `summary.json`, `pipeline.yaml` (the final files),
`run.json` (which configuration and input they came from), `shards/` (per-shard manifests and
`done` markers) and `files/NNNNNN/<stage>/` (files stages wrote, e.g. audio).
"""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from osum_data.errors import UsageError
from osum_data.manifest_io import atomic_path, read_jsonl, write_jsonl
from osum_data.run.shard import SHARD_DIR, shard_paths
from osum_data.run.stage import shard_files_dir

FINAL_FILES = ("cuts.jsonl.gz", "rejects.jsonl.gz", "summary.json", "pipeline.yaml", "run.json")
MANIFESTS = ("cuts.jsonl.gz", "rejects.jsonl.gz")  # the final files that name audio in files/
FILES_DIR = "files"
SUPERSEDED_DIR = "superseded"


class OutputError(UsageError):
    """The output directory cannot be used (a file, locked by another run, not writable)."""


@contextmanager
def locked(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on `out_dir` for the run; a second run into it fails at once."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--output {out_dir} is a file; give a directory (it is created if missing)")
    try:
        (out_dir / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create output directory {out_dir}: {e.strerror}") from None
    fd = os.open(out_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise OutputError(
                f"output directory {out_dir} is in use by another run (pid {holder}); wait for it to "
                "finish or choose another --output"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock (and a killed process releases it too)


def check_input_outside(out_dir: Path, input_path: Path) -> None:
    """Refuse an input that the run would move or overwrite: one of `out_dir`'s final files, or a
    file under its shards/ or superseded/ folders (`--output` pointed at the input's own folder)."""
    src = input_path / "cuts.jsonl.gz" if input_path.is_dir() else input_path
    src, out = src.resolve(), out_dir.resolve()
    owned = [out / name for name in FINAL_FILES] + [out / SHARD_DIR, out / SUPERSEDED_DIR]
    if any(src == p or p in src.parents for p in owned):
        raise OutputError(
            f"--input {input_path} lies in --output {out_dir}, whose files the run replaces; "
            "write the output to another folder"
        )


def set_aside_previous(out_dir: Path, identity: dict[str, str]) -> Path | None:
    """If the final files come from another configuration or input, move them to
    `superseded/<config hash>-<input digest>/` so the directory never shows two runs mixed. The
    audio they name in `files/` goes with them (`superseded/<tag>/files/`, their manifests
    re-pointed there), so a set-aside manifest still describes audio that exists."""
    run_file = out_dir / "run.json"
    present = [n for n in FINAL_FILES if (out_dir / n).exists()]
    if not present:
        return None
    try:
        previous = json.loads(run_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        previous = {}
    if previous and all(previous.get(k) == v for k, v in identity.items()):
        return None
    tag = f"{previous.get('config_hash', 'unknown')}-{previous.get('input_digest', 'unknown')}"
    dest = out_dir / SUPERSEDED_DIR / tag
    dest.mkdir(parents=True, exist_ok=True)
    keep_files = _keep_stage_files(out_dir, dest)
    for name in present:
        if keep_files and name in MANIFESTS:
            _repoint(out_dir / name, dest / name, out_dir / FILES_DIR, dest / FILES_DIR)
            (out_dir / name).unlink()
        else:
            os.replace(out_dir / name, dest / name)
    return dest


def _keep_stage_files(out_dir: Path, dest: Path) -> bool:
    """Give the set-aside run its own copy of `files/` (the audio stages wrote) in `dest/files/`.

    The new run rewrites `files/NNNNNN/<stage>/*` under the same names, so a set-aside manifest that
    still pointed there would describe audio that no longer exists (issue 20 item 7). Hard links cost
    no bytes and keep the old audio: the runner empties a shard's files folder before it re-runs the
    shard, so every file the new run writes is a new file and the links keep the old content. (A
    file system without links gets a copy.) Finished shards the new run can reuse keep theirs."""
    src = out_dir / FILES_DIR
    if not src.is_dir() or not any(src.iterdir()):
        return False
    target = dest / FILES_DIR
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(src, target, copy_function=_link_or_copy)
    return True


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _repoint(src: Path, dest: Path, old_root: Path, new_root: Path) -> None:
    """Copy the manifest `src` to `dest` with every file source under `old_root` moved to `new_root`."""
    old, new = str(old_root.absolute()) + os.sep, str(new_root.absolute()) + os.sep

    def fix(node: Any) -> Any:
        if isinstance(node, dict):
            if (
                node.get("type") == "file"
                and isinstance(node.get("source"), str)
                and node["source"].startswith(old)
            ):
                return {**node, "source": new + node["source"][len(old) :]}
            return {k: fix(v) for k, v in node.items()}
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    write_jsonl(dest, (fix(d) for d in read_jsonl(src)))


def write_identity(out_dir: Path, identity: dict[str, str]) -> None:
    with atomic_path(out_dir / "run.json") as tmp:
        tmp.write_text(json.dumps(identity, indent=2, sort_keys=True) + "\n")


def cleanup_partial(out_dir: Path) -> None:
    """Remove temp files a killed run left behind (atomic writes never expose them)."""
    for tmp in (out_dir / SHARD_DIR).glob(".*.tmp*"):
        tmp.unlink(missing_ok=True)
    for tmp in (out_dir / SHARD_DIR).glob(".trace.*"):
        tmp.unlink(missing_ok=True)


def invalidate(out_dir: Path, index: int) -> None:
    """Forget a finished shard before it is re-run, so a half-redone shard never looks done."""
    shard_paths(out_dir, index)["done"].unlink(missing_ok=True)


def remove_stale(out_dir: Path, n_shards: int) -> None:
    """Shards past the end belong to an earlier, larger input: drop them so merging is exact."""
    for kind in ("cuts", "rejects", "done"):
        for p in (out_dir / SHARD_DIR).glob(f"{kind}.*.json*"):
            idx = p.name.split(".")[1]
            if idx.isdigit() and int(idx) >= n_shards:
                p.unlink()
    files = out_dir / "files"
    if files.is_dir():
        for d in files.iterdir():
            if d.name.isdigit() and int(d.name) >= n_shards:
                shutil.rmtree(shard_files_dir(out_dir, int(d.name)), ignore_errors=True)


_EMPTY_GZIP = gzip.compress(b"", mtime=0)


def concat(parts: list[Path], dest: Path) -> None:
    """Concatenate gzip shard files: a multi-member gzip stream is a valid gzip file, so the
    merged manifest costs a byte copy, not a recompression. No parts: a valid empty gzip file."""
    with atomic_path(dest) as tmp, open(tmp, "wb") as out:
        if not parts:
            out.write(_EMPTY_GZIP)
        for p in parts:
            with open(p, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
