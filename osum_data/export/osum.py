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
- It runs on the pipeline engine (`engine.py`): the `export_osum` stage writes each runner shard's
  wavs, `data.list` piece and tar shard into the shard's files folder on Ray workers; a killed export
  resumes from its finished shards, and the gather step links the pieces into `OUT/` in shard order
  (one tar shard per runner shard of `shard_size` cuts). The driver only pre-reads the ids (for
  duplicate keys and file-name clashes), so its memory grows by one id per cut, not by audio.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import wave
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from lhotse import MonoCut
from lhotse.cut import Cut

from osum_data.export.engine import (
    RUN_DIR,
    concat_text,
    link,
    relative_or_absolute,
    run_export_stage,
    shard_dirs,
    write_summary,
)
from osum_data.export.osum_dialect import (
    DEFAULT_DIALECT,
    Dialect,
    DialectError,
    convert,
    load_dialect,
    scan_manifest,
    write_prompt_config,
)
from osum_data.export.osum_reader import MEMBER_FIELDS, SAMPLING_RATE
from osum_data.manifest_io import (
    atomic_path,
    dumps,
    open_jsonl_writer,
    read_jsonl,
    reject_record,
    safe_file_name,
    write_jsonl,
)
from osum_data.run.stage import Reject, StageContext, StageResult, is_fatal, register_stage
from osum_data.tasks import parse_target, registry

STAGE = "export_osum"
# Supervision `custom` fields carried into `extra` (DESIGN section 3), when set.
SUPERVISION_EXTRAS = ("age", "age_years", "style", "events", "answer", "label_source", "confidence")
# lhotse already fixes small length drift; anything beyond this (samples at 16 kHz) is a bad cut.
LENGTH_TOLERANCE = 16
safe_name = safe_file_name  # the name a cut id gets as a wav file and as a tar member prefix


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
    reasons: dict[str, int] = field(default_factory=dict)  # rejects by reason category
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
        """`reasons` by category and, under the other formats' key, `rejected_by_reason` by code."""
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
    from osum_data.export.formats import refuse_output_over_input

    refuse_output_over_input(out, Path(cuts_path).parent)
    chosen = load_dialect(dialect)
    keys = scan_manifest(cuts_path, chosen)  # before any work: a key or tag the dialect lacks fails here
    report, groups = run_osum_export(
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
    result = run_export_stage(
        STAGE,
        params,
        plan,
        out,
        shard_size=shard_size,
        workers=num_workers,
        address=address,
        progress=progress,
        imports=["osum_data.export.osum"],
    )
    run = result.summary
    _clear_previous_export(out)
    if group_by_mix:
        for split in ("train", "dev", "test"):
            shutil.rmtree(out / split, ignore_errors=True)
    groups = _gather(out, out / RUN_DIR, run["shards"], shards)
    if shards:
        for group, tar_paths in groups.items():
            _write_shards_list(out / group, tar_paths, relative)
    counters = next((s.get("counters", {}) for s in run["stages"] if s["stage"] == STAGE), {})
    report = ExportReport(
        cuts=run["in"],
        exported=run["out"],
        rejected=run["rejected"],
        shards=sum(len(t) for t in groups.values()),
        hours=float(counters.get("seconds", 0.0)) / 3600,
        out_dir=str(out),
        referenced=int(counters.get("referenced", 0)),
        materialised=int(counters.get("materialised", 0)),
    )
    report.reasons, report.codes = _export_rejects(out / RUN_DIR, out / "rejects.jsonl.gz")
    return report, groups


def wav_bytes(samples: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> bytes:
    """Canonical mono int16 WAV (plain 44-byte header, no metadata): same samples, same bytes."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sampling_rate)
        w.writeframes(np.asarray(samples, dtype="<i2").tobytes())
    return buf.getvalue()


def to_int16(audio: np.ndarray) -> np.ndarray:
    """Float [-1, 1) -> int16; exact for audio that came from int16 (lhotse divides by 32768)."""
    return np.clip(np.rint(audio * 32768.0), -32768, 32767).astype(np.int16)


def referenced_wav(cut: Cut) -> str | None:
    """Absolute path of the file to reference in place, or None if the cut must be materialised.

    Only a whole, untransformed, single-file 16 kHz mono PCM_16 WAV qualifies: that is what the
    trainer can open directly and it holds exactly the cut's samples.
    """
    if not isinstance(cut, MonoCut) or not cut.has_recording:
        return None
    rec = cut.recording
    if rec.transforms or len(rec.sources) != 1 or rec.sources[0].type != "file":
        return None
    if rec.sampling_rate != SAMPLING_RATE or rec.num_channels != 1:
        return None
    if abs(cut.start) * SAMPLING_RATE >= 0.5 or cut.num_samples != rec.num_samples:
        return None
    path = os.path.abspath(rec.sources[0].source)
    try:
        info = sf.info(path)
    except (OSError, RuntimeError):
        return None  # materialising will fail too and say why
    ok = (info.format, info.subtype, info.channels, info.samplerate, info.frames) == (
        "WAV",
        "PCM_16",
        1,
        SAMPLING_RATE,
        rec.num_samples,
    )
    return path if ok else None


def render_16k(cut: Cut) -> np.ndarray:
    """The cut's audio as 16 kHz mono int16, of exactly `compute_num_samples(duration, 16k)`."""
    resampled = cut.resample(SAMPLING_RATE)  # lazy; a plain copy when already at 16 kHz
    audio = np.asarray(resampled.load_audio(), dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=0)  # multi-channel cuts are downmixed; OSUM is mono
    n = resampled.num_samples
    if abs(len(audio) - n) > LENGTH_TOLERANCE:
        raise ValueError(f"loaded {len(audio)} samples, expected {n}")
    audio = np.pad(audio[:n], (0, n - min(n, len(audio))))
    return to_int16(audio)


SPAN_TOLERANCE = LENGTH_TOLERANCE / SAMPLING_RATE  # seconds a cut may end past its recording


def span_problem(cut: Cut) -> str | None:
    """Why a cut's span is not inside its recording (negative start, end past the recording), or
    None. Lhotse would pad or shift such a cut silently instead of failing."""
    if not isinstance(cut, MonoCut):
        return None
    if cut.start < 0:
        return f"bad span: cut starts at {cut.start:g} s, before its recording"
    if cut.has_recording and cut.end > cut.recording.duration + SPAN_TOLERANCE:
        return f"bad span: cut ends at {cut.end:g} s, after its recording's {cut.recording.duration:g} s"
    return None


class _Reject(Exception):
    """A cut that cannot be exported; the message is the reason written to rejects."""


@dataclass
class _Result:
    line: dict[str, Any] | None = None  # the data.list record
    wav: bytes | None = None  # WAV bytes for the tar (only when sharding)
    referenced: bool = False


def _clear_previous_export(out: Path) -> None:
    """Remove what an earlier export into `out` wrote (materialised wavs, tar shards, their list)."""
    for path in (out / "wav").glob("*.wav") if (out / "wav").is_dir() else ():
        path.unlink()
    for path in (out / "shards").glob("shard_*.tar") if (out / "shards").is_dir() else ():
        path.unlink()
    (out / "shards_list.txt").unlink(missing_ok=True)


PRE_REJECT = "export_reject"  # custom key of a placeholder cut: a line rejected before any work


def _items(cuts_path: str | Path) -> Iterator[tuple[dict[str, Any], str | None]]:
    """Raw cut dicts with a pre-decided reject reason (bad id, duplicate key, name clash) or None."""
    seen: set[str] = set()
    names: dict[str, str] = {}  # case-folded safe name -> the id that has it
    for raw in read_jsonl(cuts_path):
        if not isinstance(raw, dict):
            yield {"raw": raw}, "bad cut: not a JSON object"
            continue
        key = raw.get("id")
        if not isinstance(key, str) or not key:
            yield raw, "bad cut: no id"
            continue
        if key in seen:
            yield raw, "duplicate key: an earlier cut has this id"
            continue
        # Case-folded: on a case-insensitive file system 'A.wav' and 'a.wav' are one file.
        name = safe_file_name(key).casefold()
        if name in names:
            yield raw, f"name clash: id {key!r} gets the file name of {names[name]!r}"
            continue
        seen.add(key)
        names[name] = key
        yield raw, None


def _runner_items(cuts_path: str | Path) -> Iterator[dict[str, Any]]:
    """The runner's input: each cut as it is, or, for a line rejected up front, a placeholder cut
    (a fresh id, so the runner's own duplicate check never sees it) carrying the raw line and the
    reason; the stage rejects it and the gather restores the raw line in the rejects file."""
    for n, (raw, reason) in enumerate(_items(cuts_path)):
        if reason is None:
            yield raw
        else:
            yield {
                "id": f"<rejected before export: input item {n}>",
                "start": 0.0,
                "duration": 0.0,
                "channel": 0,
                "supervisions": [],
                "custom": {PRE_REJECT: {"reason": reason, "raw": raw}},
                "type": "MonoCut",
            }


def _code(reason: str) -> str:
    return reason.split(":")[0].strip().replace(" ", "_")


@register_stage(STAGE, version=1)
class ExportOsumStage:
    """One runner shard of the OSUM export: its data.list piece, materialised wavs and (with
    `shards`) its tar, in the shard's files folder; `out_dir` is where they will be linked."""

    def __init__(
        self,
        out_dir: str,
        shards: bool = False,
        relative: bool = False,
        group_by_mix: bool = False,
        dialect: str | None = None,
    ):
        self.out = Path(out_dir)
        self.shards = shards
        self.relative = relative
        self.group_by_mix = group_by_mix  # a mix's cuts: one sub-export per split/task(/dataset)
        self.dialect = load_dialect(dialect) if dialect else None  # None: our own tags, as they are

    def __call__(self, cuts: list[Cut], ctx: StageContext) -> StageResult:
        files = ctx.files_dir
        for old in files.iterdir():  # a retried batch starts from nothing
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        result = StageResult(counters={"referenced": 0, "materialised": 0, "seconds": 0.0})
        done: dict[str, list[_Result]] = {}
        for cut in cuts:
            pre = (cut.custom or {}).get(PRE_REJECT)
            if pre:
                result.rejected.append((cut, Reject(_code(pre["reason"]), pre["reason"])))
                continue
            group = mix_group(cut) if self.group_by_mix else ""
            try:
                res = self._one(cut, files / group, group)
            except _Reject as e:
                result.rejected.append((cut, Reject(_code(str(e)), str(e))))
                continue
            except Exception as e:
                if is_fatal(e):
                    raise
                result.rejected.append((cut, Reject("error", f"bad cut: {_brief(e)}")))
                continue
            done.setdefault(group, []).append(res)
            result.kept.append(cut)
            result.counters["referenced" if res.referenced else "materialised"] += 1
            result.counters["seconds"] += res.line["extra"]["duration"]
        for group, results in (done or {"": []}).items():
            folder = files / group
            with atomic_path(folder / "data.list") as tmp:
                tmp.write_text("".join(dumps(r.line) + "\n" for r in results), encoding="utf-8")
            if self.shards and results:
                with (
                    atomic_path(folder / "shard.tar") as tmp,
                    tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar,
                ):
                    for r in results:
                        for name, data in _members(r.line, r.wav):
                            tar.addfile(_tarinfo(name, len(data)), io.BytesIO(data))
        return result

    def _one(self, cut: Cut, files: Path, group: str) -> _Result:
        task, txt = _target(cut)
        span = span_problem(cut)
        if span is not None:
            raise _Reject(span)
        try:
            _check_sources_exist(cut)
            path = None if self.relative else referenced_wav(cut)
            if path is not None:
                samples = sf.read(path, dtype="int16")[0] if self.shards else None
                num_samples = cut.recording.num_samples
            else:
                samples = render_16k(cut)
                num_samples = len(samples)
            if num_samples == 0:
                raise ValueError("no audio samples (zero duration)")
        except Exception as e:  # any decoder/transform failure: recorded with its cause
            if is_fatal(e):
                raise
            raise _Reject(f"audio: {_brief(e)}") from None
        data = wav_bytes(samples) if samples is not None else None
        referenced = path is not None
        if path is None:
            assert data is not None
            name = safe_name(cut.id) + ".wav"
            with atomic_path(files / "wav" / name) as tmp:
                tmp.write_bytes(data)
            path = relative_or_absolute(self.out / group / "wav" / name, self.out / group, self.relative)
        line = _line(cut, path, task, txt, num_samples / SAMPLING_RATE)
        if self.dialect is not None:
            _apply_dialect(line, self.dialect, cut)
        return _Result(line=line, wav=data if self.shards else None, referenced=referenced)


def _apply_dialect(line: dict[str, Any], dialect: Dialect, cut: Cut) -> None:
    """The line in the dialect's tags and `extra` fields (checked before the run by `scan`; a
    mismatch here is a reject with its reason, never a line the dialect cannot read)."""
    custom = getattr(cut, "custom", None) or {}
    try:
        txt, extra = convert(
            dialect,
            line["task"],
            line["txt"],
            custom.get("instruction"),
            line["extra"].get("age"),
            line["gender"] or None,
        )
    except DialectError as e:
        raise _Reject(f"dialect: {e}") from None
    line["txt"] = txt
    line["extra"].update(extra)


def mix_group(cut: Cut) -> str:
    """Where a mix's cut goes in a grouped export: `train/<task>/<dataset>/x<copies>` (the copies OSUM
    takes of it per pass, osum_config.py), `dev/<task>`, `test/<task>`."""
    mix = (cut.custom or {}).get("mix") or {}
    if mix.get("split") == "train":
        return f"train/{mix['task']}/{mix['dataset']}/x{int(mix.get('copies', 1))}"
    return f"{mix.get('split', 'other')}/{mix.get('task', 'other')}"


def _gather(out: Path, run_dir: Path, n_shards: int, shards: bool) -> dict[str, list[Path]]:
    """Link the shards' wavs and tars into OUT (or OUT/<group>), concatenate their data.list pieces in
    shard order; returns each group's tar shards."""
    pieces: dict[str, list[Path]] = {}
    tars: dict[str, list[Path]] = {}
    for _, d in shard_dirs(run_dir, STAGE, n_shards):
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
    for group, parts in pieces.items():
        concat_text(parts, out / group / "data.list")
    if not pieces:
        concat_text([], out / "data.list")
    return tars


def _export_rejects(run_dir: Path, dest: Path) -> tuple[dict[str, int], dict[str, int]]:
    """The run's rejects as this export's: the raw line for items rejected up front, the cut
    otherwise, each with `custom.reject = {stage: export_osum, reason, code}`; returns counts by the
    reason's category (the text before its first colon) and by code."""
    reasons: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    with open_jsonl_writer(dest) as f:
        for rec in read_jsonl(run_dir / "rejects.jsonl.gz"):
            custom = rec.get("custom") or {}
            reason = custom.get("reject", {}).get("reason", "rejected")
            code = custom.get("reject", {}).get("code") or _code(reason)
            pre = custom.get(PRE_REJECT)
            if pre:
                out = reject_record(pre["raw"], STAGE, pre["reason"])
            else:
                out = reject_record({k: v for k, v in rec.items()}, STAGE, reason)
            out["custom"]["reject"]["code"] = code
            reasons[reason.split(":")[0]] += 1
            codes[code] += 1
            f.write(dumps(out) + "\n")
    return dict(sorted(reasons.items())), dict(sorted(codes.items()))


def _check_sources_exist(cut: Cut) -> None:
    """Name a missing source file plainly, instead of lhotse's page-long list of backend errors."""
    rec = cut.recording if isinstance(cut, MonoCut) and cut.has_recording else None
    for src in rec.sources if rec is not None else ():
        if src.type == "file" and not os.path.exists(src.source):
            raise FileNotFoundError(f"no such file: {src.source}")


def _brief(e: Exception, limit: int = 400) -> str:
    """`Type: message`, cut to its first two lines and `limit` characters (lhotse errors can
    carry whole tracebacks; rejects.jsonl.gz should stay readable)."""
    text = " ".join(str(e).strip().splitlines()[:2])
    text = f"{type(e).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _target(cut: Cut) -> tuple[str, str]:
    """(task key, target text); an untemplated cut is plain ASR on its transcript."""
    custom = getattr(cut, "custom", None) or {}
    if "task" not in custom and "target" not in custom:
        task = registry().task("asr").key
        txt = cut.supervisions[0].text if cut.supervisions else None
    else:
        task, txt = custom.get("task"), custom.get("target")
    if not isinstance(txt, str) or not txt.strip():
        raise _Reject("missing target")
    if not isinstance(task, str) or task not in registry().all_keys:
        raise _Reject(f"unknown task: {task!r}")
    try:
        parse_target(task, txt)
    except (ValueError, KeyError) as e:
        raise _Reject(f"bad target: {e}") from None
    return task, txt


def _line(cut: Cut, wav: str, task: str, txt: str, duration: float) -> dict[str, Any]:
    sup = cut.supervisions[0] if cut.supervisions else None
    sup_custom = (sup.custom if sup is not None else None) or {}
    custom = getattr(cut, "custom", None) or {}
    extra: dict[str, Any] = {"duration": duration}
    if custom.get("instruction"):
        extra["instruction"] = custom["instruction"]
    for name in SUPERVISION_EXTRAS:
        if sup_custom.get(name) not in (None, "", []):
            extra[name] = sup_custom[name]
    if isinstance(cut, MonoCut):
        extra["recording_id"] = cut.recording_id
        extra["start"] = cut.start
    if custom.get("augment"):
        extra["augment"] = custom["augment"]
    if safe_file_name(cut.id) != cut.id:
        extra["cut_id"] = cut.id  # tar keys are the safe name; this keeps the original id
    return {
        "key": cut.id,
        "wav": wav,
        "txt": txt,
        "task": task,
        "lang": _text(sup.language if sup else None),
        "speaker": _text(sup.speaker if sup else None),
        "emotion": _text(sup_custom.get("emotion")),
        "gender": _text(sup.gender if sup else None),
        "extra": extra,
    }


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _members(line: dict[str, Any], wav: bytes) -> Iterator[tuple[str, bytes]]:
    """(member name, bytes) per field, in MEMBER_FIELDS order."""
    extra = line["extra"]
    values = {
        "wav": wav,
        "duration": repr(float(extra["duration"])),
        "extra": dumps(extra),
        **{f: line[f] for f in ("txt", "task", "lang", "speaker", "emotion", "gender")},
    }
    prefix = safe_file_name(line["key"])
    for f in MEMBER_FIELDS:
        v = values[f]
        yield f"{prefix}.{f}", v if isinstance(v, bytes) else v.encode("utf-8")


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mode = size, tarfile.REGTYPE, 0o644
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    return info


def _write_shards_list(out: Path, paths: list[Path], relative: bool = False) -> None:
    with atomic_path(out / "shards_list.txt") as tmp:
        text = "".join(f"{relative_or_absolute(p, out, relative)}\n" for p in paths)
        tmp.write_text(text, encoding="utf-8")
