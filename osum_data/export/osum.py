"""Export task-sample cuts as OSUM/WeNet training data: a raw `data.list` and optional tar shards.

OSUM trains from WeNet's two layouts (DESIGN section 11): a JSON-lines list whose `wav` names an
audio file, or tars of ~1000 utterances with one member per field. Both are written here from one
streaming pass over a Lhotse CutSet manifest; `osum_reader` reads them back and validates them.

Choices worth knowing:

- Unknown `lang`/`speaker`/`emotion`/`gender` are written as "" (never null): tar members can
  only hold text, and "" keeps the raw list and the shards identical and safe for string code.
- Audio: a cut that is exactly a whole, untransformed 16 kHz mono int16 WAV file is referenced in
  place (nothing copied). Anything else (segments, other rates, transforms, other formats) is
  rendered through lhotse at 16 kHz into `OUT/wav/<name>.wav`.
- Paths in `data.list` and `shards_list.txt` are absolute by default: WeNet opens them relative to
  the trainer's working directory. Hence "same input -> same bytes" holds for the same output
  folder. With `relative=True` they are relative to the export folder and every cut's audio is
  materialised inside it (nothing referenced outside), so the folder can be moved or copied to a
  cluster; run the trainer from inside it (our reader resolves them against the list's folder).
- Every input cut ends in `data.list` or in `rejects.jsonl.gz` (with a reason), never nowhere.
- A dialect (osum_dialect.py: `osum` v1 or `echat`) decides the keys, tags and `extra` fields
  written; every sample is checked against it before any work (a key or tag it lacks fails the
  export, naming the cut), and `OUT/prompt_config.yaml` holds our instruction pools for every key
  written, since OSUM draws instructions from its prompt config by key.
- File and tar member names come from cut ids through `safe_file_name` (no '/', no '..': a member
  can never leave its folder when extracted); the tar key is that safe name, and `extra.cut_id`
  keeps the original id when they differ. Two ids that would share a name are a reject.
- Exporting into a folder that holds an earlier export removes that export's wav/ files and
  shards first, so the folder never mixes two exports.
- It runs on the pipeline engine (`engine.py`): the `export_osum` stage (osum_stage.py) writes each
  runner shard's wavs, `data.list` piece and tar shard into the shard's files folder on Ray workers;
  this module is the driver (pre-scan, run, gather, report); a killed export
  resumes from its finished shards, and the gather step links the pieces into `OUT/` in shard order
  (one tar shard per runner shard of `shard_size` cuts). The driver only pre-reads the ids (for
  duplicate keys and file-name clashes), so its memory grows by one id per cut, not by audio.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from osum_data.export.engine import (
    RUN_DIR,
    check_on_disk,
    concat_text,
    export_rejects,
    link,
    part_dirs,
    pre_rejected,
    refuse_output_over_input,
    relative_or_absolute,
    run_stage,
    write_summary,
)
from osum_data.export.media import safe_name
from osum_data.export.osum_dialect import DEFAULT_DIALECT, load_dialect, scan_manifest, write_prompt_config
from osum_data.export.osum_stage import STAGE, ExportOsumStage
from osum_data.manifest_io import (
    JSONTooDeep,
    atomic_path,
    loads_line,
    read_lines,
    safe_file_name,
    write_jsonl,
)
from osum_data.rejects import Reject

__all__ = ["ExportReport", "export_osum", "run_osum_export", "safe_name"]


@dataclass
class ExportReport:
    """Counts of one export; `exported + rejected == cuts` always holds."""

    cuts: int = 0
    exported: int = 0
    rejected: int = 0
    shards: int = 0
    hours: float = 0.0
    out_dir: str = ""
    referenced: int = 0  # exported cuts whose wav is the source file itself
    materialised: int = 0  # exported cuts rendered into OUT/wav/
    reasons: dict[str, int] = field(default_factory=dict)  # rejects by reason (the code in words)
    codes: dict[str, int] = field(default_factory=dict, repr=False)  # by code, like the other formats

    def summary(self) -> str:
        text = (
            f"Exported {self.exported:,} of {self.cuts:,} cuts ({self.hours:.2f} h) to {self.out_dir}: "
            f"{self.referenced:,} referencing their 16 kHz source WAV, {self.materialised:,} materialised "
            f"as 16 kHz WAV in wav/"
        )
        text += f", packed into {self.shards:,} tar shard(s)." if self.shards else "."
        if self.rejected:
            why = ", ".join(f"{k}: {v:,}" for k, v in sorted(self.reasons.items()))
            text += f" Rejected {self.rejected:,} ({why}); see rejects.jsonl.gz for each one's reason."
        else:
            text += " Nothing was rejected."
        return text

    def to_dict(self) -> dict[str, Any]:
        """`reasons` in words and, under the other formats' key, `rejected_by_reason` by code."""
        d = asdict(self)
        d["rejected_by_reason"] = d.pop("codes")
        return d


def export_osum(
    cuts_path: str | Path,
    out_dir: str | Path,
    shards: bool = False,
    shard_size: int = 1000,
    num_workers: int | None = 1,
    relative: bool = False,
    address: str | None = None,
    progress: bool = False,
    dialect: str = DEFAULT_DIALECT,
) -> ExportReport:
    """Write OUT/data.list (+ OUT/shards/*.tar and OUT/shards_list.txt) from a cuts manifest.

    Runs as a pipeline on Ray (`num_workers` workers, or a cluster at `address`); output order is
    input order whatever the worker count. `relative`: paths relative to OUT, all audio inside it.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    out = Path(os.path.abspath(out_dir))
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"export folder {out} is a file; give a directory")
    if not Path(cuts_path).is_file():
        raise FileNotFoundError(f"cuts manifest not found: {cuts_path}")
    refuse_output_over_input(out, Path(cuts_path).parent)
    chosen = load_dialect(dialect)
    keys = scan_manifest(cuts_path, chosen)  # before any work: a key or tag the dialect lacks fails here
    report, _ = run_osum_export(
        cuts_path, out, shards, shard_size, num_workers, relative, address, progress, dialect=dialect
    )
    write_prompt_config(out, keys, chosen)
    write_summary(
        out,
        {
            "type": "export",
            "format": "osum",
            "relative": relative,
            "dialect": dialect,
            "prompt_keys": keys,
            **report.to_dict(),
        },
    )
    return report


def run_osum_export(
    cuts_path: str | Path,
    out: Path,
    shards: bool,
    shard_size: int,
    num_workers: int | None,
    relative: bool,
    address: str | None,
    progress: bool,
    group_by_mix: bool = False,
    dialect: str | None = None,
) -> tuple[ExportReport, dict[str, list[Path]]]:
    """The export run and its gather; with `group_by_mix`, one sub-export per mix group
    (`OUT/<group>/data.list`, shards, list). Returns the report and each group's tar shards."""
    plan = out / RUN_DIR / "input.jsonl.gz"
    write_jsonl(plan, _runner_items(cuts_path))
    params = {
        "out_dir": str(out),
        "shards": shards,
        "relative": relative,
        "group_by_mix": group_by_mix,
        "dialect": dialect,
    }
    result = run_stage(
        ExportOsumStage,
        params,
        plan,
        out / RUN_DIR,
        name=f"export-{STAGE}",
        shard_size=shard_size,
        workers=num_workers,
        address=address,
        progress=progress,
    )
    run = result.summary
    _clear_previous_export(out)
    if group_by_mix:
        for split in ("train", "dev", "test"):
            shutil.rmtree(out / split, ignore_errors=True)
    groups, lines = _gather(out, out / RUN_DIR, run["shards"], shards)
    if shards:
        for group, tar_paths in groups.items():
            _write_shards_list(out / group, tar_paths, relative)
    counters = next((s.get("counters", {}) for s in run["stages"] if s["stage"] == STAGE), {})
    report = ExportReport(
        cuts=run["in"],
        exported=check_on_disk(f"export osum to {out}", lines, run["out"]),
        rejected=run["rejected"],
        shards=sum(len(t) for t in groups.values()),
        hours=float(counters.get("seconds", 0.0)) / 3600,
        out_dir=str(out),
        referenced=int(counters.get("referenced", 0)),
        materialised=int(counters.get("materialised", 0)),
    )
    report.codes = export_rejects(out / RUN_DIR, out / "rejects.jsonl.gz", STAGE)
    report.reasons = {code.replace("_", " "): n for code, n in report.codes.items()}
    return report, groups


def _clear_previous_export(out: Path) -> None:
    """Remove what an earlier export into `out` wrote (materialised wavs, tar shards, their list)."""
    for path in (out / "wav").glob("*.wav") if (out / "wav").is_dir() else ():
        path.unlink()
    for path in (out / "shards").glob("shard_*.tar") if (out / "shards").is_dir() else ():
        path.unlink()
    (out / "shards_list.txt").unlink(missing_ok=True)


def _items(cuts_path: str | Path) -> Iterator[tuple[dict[str, Any], Reject | None]]:
    """Raw cut dicts with a pre-decided Reject (bad line, bad id, duplicate key, name clash) or None."""
    seen: set[str] = set()
    names: dict[str, str] = {}  # case-folded safe name -> the id that has it
    for number, line in read_lines(cuts_path, "cuts manifest"):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raw = line[:2000].decode("utf-8", "replace")
            yield (
                {"raw": raw},
                Reject("not_utf8", f"not utf8: input line {number}: {e.reason} at byte {e.start}"),
            )
            continue
        try:
            raw = loads_line(text)
        except JSONTooDeep as e:
            yield {"raw": text[:2000]}, Reject("too_deep", f"too deep: input line {number}: JSON {e.msg}")
            continue
        except json.JSONDecodeError as e:
            yield {"raw": text[:2000]}, Reject("bad_json", f"bad json: input line {number}: not JSON ({e})")
            continue
        if not isinstance(raw, dict):
            yield {"raw": raw}, Reject("bad_cut", "bad cut: not a JSON object")
            continue
        key = raw.get("id")
        if not isinstance(key, str) or not key:
            yield raw, Reject("bad_cut", "bad cut: no id")
            continue
        if key in seen:
            yield raw, Reject("duplicate_key", "duplicate key: an earlier cut has this id")
            continue
        # Case-folded: on a case-insensitive file system 'A.wav' and 'a.wav' are one file.
        name = safe_file_name(key).casefold()
        if name in names:
            yield raw, Reject("name_clash", f"name clash: id {key!r} gets the file name of {names[name]!r}")
            continue
        seen.add(key)
        names[name] = key
        yield raw, None


def _runner_items(cuts_path: str | Path) -> Iterator[dict[str, Any]]:
    """The runner's input: each cut as it is, or, for a line rejected up front, a placeholder cut
    carrying the raw line and the Reject (engine.pre_rejected); the stage rejects it and the
    gather restores the raw line in the rejects file."""
    for n, (raw, reject) in enumerate(_items(cuts_path)):
        yield raw if reject is None else pre_rejected(n, raw, reject)


def _gather(out: Path, run_dir: Path, n_shards: int, shards: bool) -> tuple[dict[str, list[Path]], int]:
    """Link the shards' wavs and tars into OUT (or OUT/<group>), concatenate their data.list pieces in
    shard order; returns each group's tar shards and the number of data.list lines written."""
    pieces: dict[str, list[Path]] = {}
    tars: dict[str, list[Path]] = {}
    for _, d in part_dirs(run_dir, STAGE, n_shards):
        for piece in sorted(d.rglob("data.list")):
            folder = piece.parent
            group = folder.relative_to(d).as_posix().removeprefix(".")
            dest = out / group
            for wav in sorted((folder / "wav").glob("*.wav")) if (folder / "wav").is_dir() else ():
                link(wav, dest / "wav" / wav.name)
            pieces.setdefault(group, []).append(piece)
            group_tars = tars.setdefault(group, [])
            if shards and (folder / "shard.tar").exists():
                tar = dest / "shards" / f"shard_{len(group_tars):06d}.tar"
                link(folder / "shard.tar", tar)
                group_tars.append(tar)
    lines = sum(concat_text(parts, out / group / "data.list") for group, parts in pieces.items())
    if not pieces:
        concat_text([], out / "data.list")
    return tars, lines


def _write_shards_list(out: Path, paths: list[Path], relative: bool = False) -> None:
    with atomic_path(out / "shards_list.txt") as tmp:
        text = "".join(f"{relative_or_absolute(p, out, relative)}\n" for p in paths)
        tmp.write_text(text, encoding="utf-8")
