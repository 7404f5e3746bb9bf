"""Lhotse Shar with audio, written by a runner stage: each shard's cuts and 16 kHz FLAC recordings.

The `shar_write` stage writes, per runner shard and per output group (the mix's `train`, `dev/<task>`,
`test/<task>`), one Shar shard with lhotse's own `SharWriter` (`cuts.jsonl.gz` + `recording.tar`)
into the shard's files directory. `gather_shar` then links them, in shard order, into
`OUT/<group>/cuts.NNNNNN.jsonl.gz` + `recording.NNNNNN.tar`: a Shar directory that
`CutSet.from_shar(in_dir=...)` and the bundled trainer read.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Annotated, Literal

from lhotse.cut import Cut
from lhotse.shar import SharWriter
from pydantic import Field

from osum_data.export.engine import call_part, check_on_disk, link, part_dirs, zero_gzip_mtime
from osum_data.export.media import brief
from osum_data.manifest_io import safe_file_name
from osum_data.rejects import Reject
from osum_data.run.stage import StageContext, StageResult, is_fatal, register_stage
from osum_data.sources import ID_CODE

STAGE = "shar_write"
FIELDS = ("cuts.jsonl.gz", "recording.tar")


def group_of(cut: Cut) -> str:
    """`train`, `dev/<task>` or `test/<task>` for a mix's cuts; `all` for anything else."""
    mix = (cut.custom or {}).get("mix") or {}
    split = mix.get("split")
    if split == "train":
        return "train"
    if split in ("dev", "test") and mix.get("task"):
        return f"{split}/{mix['task']}"
    return "all"


@register_stage(STAGE, version=2)  # 2: files in per-call parts
class SharWrite:
    """Write the shard's cuts as Lhotse Shar with their audio re-encoded (resampled to
    `sampling_rate`, `format` inside the tar). A cut whose audio cannot be loaded is rejected
    (`audio`), with the decoder's reason."""

    stage_name = STAGE

    def __init__(
        self,
        sampling_rate: Annotated[int, Field(ge=8000)] = 16000,
        format: Literal["flac", "wav"] = "flac",
    ):
        self.sampling_rate = sampling_rate
        self.format = format

    def __call__(self, cuts: list[Cut], ctx: StageContext) -> StageResult:
        # This call's Shar pieces go to their own part folder (engine.call_part): a batch that raises
        # is retried cut by cut, and each retry must add its cuts, not replace the shard's.
        with call_part(ctx.files_dir) as root:
            return self._write(cuts, root)

    def _write(self, cuts: list[Cut], root: Path) -> StageResult:
        writers: dict[str, SharWriter] = {}
        result = StageResult()
        try:
            for cut in cuts:
                if safe_file_name(cut.id) != cut.id:
                    # Lhotse names the tar member after the id and from_shar matches it back: an id
                    # with '/', '..' or control characters would name a member outside the tar's
                    # folder, nested, or truncated. (A mix's ids are made safe by mix_folder.mixed_id.)
                    detail = f"cut id {cut.id[:200]!r} is not a plain file name (Shar tar member)"
                    result.rejected.append((cut, Reject(ID_CODE, detail)))
                    continue
                group = group_of(cut)
                if group not in writers:
                    (root / group).mkdir(parents=True, exist_ok=True)
                    writers[group] = SharWriter(
                        root / group, fields={"recording": self.format}, shard_size=None
                    ).__enter__()
                c = cut if cut.sampling_rate == self.sampling_rate else cut.resample(self.sampling_rate)
                try:
                    writers[group].write(c)  # decodes first: a failure writes nothing
                except Exception as e:
                    if is_fatal(e):
                        raise
                    result.rejected.append((cut, Reject("audio", f"audio: {brief(e, 300)}")))
                    continue
                result.kept.append(cut)
        finally:
            for w in writers.values():
                w.close()
        for f in root.rglob("cuts.jsonl.gz"):
            zero_gzip_mtime(f)
        return result


def gather_shar(run_dir: Path, shards: int, out: Path, kept: int | None = None) -> dict[str, int]:
    """Link every shard's Shar pieces into `out/<group>/` numbered consecutively per group;
    returns the number of Shar shards per group. With `kept` (the run's count of kept cuts), the
    cuts in the linked pieces must number the same (engine.check_on_disk)."""
    counts: dict[str, int] = {}
    on_disk = 0
    targets: set[Path] = set()
    for _, d in part_dirs(run_dir, STAGE, shards):
        for cuts_file in sorted(d.rglob("cuts.jsonl.gz")):
            group = cuts_file.parent.relative_to(d).as_posix()
            k = counts.get(group, 0)
            dest = out / group
            if dest not in targets:
                targets.add(dest)
                shutil.rmtree(dest, ignore_errors=True)
            link(cuts_file, dest / f"cuts.{k:06d}.jsonl.gz")
            with gzip.open(cuts_file, "rb") as f:
                on_disk += sum(1 for line in f if line.strip())
            rec = cuts_file.parent / "recording.tar"
            link(rec, dest / f"recording.{k:06d}.tar")
            counts[group] = k + 1
    if kept is not None:
        check_on_disk(f"Shar write into {out}", on_disk, kept)
    return counts
