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
- Paths in `data.list` and `shards_list.txt` are absolute: WeNet opens them relative to the
  trainer's working directory. Hence "same input -> same bytes" holds for the same output folder.
- Every input cut ends in `data.list` or in `rejects.jsonl.gz` (with a reason), never nowhere.
- File and tar member names come from cut ids through `safe_file_name` (no '/', no '..': a member
  can never leave its folder when extracted); the tar key is that safe name, and `extra.cut_id`
  keeps the original id when they differ. Two ids that would share a name are a reject.
- Exporting into a folder that holds an earlier export removes that export's wav/ files and
  shards first, so the folder never mixes two exports.
- Streaming: cuts are read line by line and audio is prepared in a bounded window, so memory does
  not grow with the corpus (only the set of seen ids does, to catch duplicate keys).
"""

from __future__ import annotations

import copy
import io
import os
import tarfile
import wave
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from lhotse import MonoCut
from lhotse.cut import Cut
from lhotse.serialization import deserialize_item

from osum_data.export.osum_reader import MEMBER_FIELDS, SAMPLING_RATE
from osum_data.manifest_io import (
    atomic_path,
    dumps,
    open_jsonl_writer,
    read_jsonl,
    reject_record,
    safe_file_name,
)
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
        return asdict(self)


def export_osum(
    cuts_path: str | Path,
    out_dir: str | Path,
    shards: bool = False,
    shard_size: int = 1000,
    num_workers: int = 1,
    progress: Callable[[ExportReport], None] | None = None,
) -> ExportReport:
    """Write OUT/data.list (+ OUT/shards/*.tar and OUT/shards_list.txt) from a cuts manifest.

    Output order is input order whatever `num_workers`; `progress`, if given, is called with the
    running report after every cut.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    out = Path(os.path.abspath(out_dir))
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"export folder {out} is a file; give a directory")
    _clear_previous_export(out)
    report = ExportReport(out_dir=str(out))
    prepare = partial(_prepare, wav_dir=str(out / "wav"), want_bytes=shards)
    seconds = 0.0
    reasons: Counter[str] = Counter()
    with ExitStack() as stack:
        data_list = stack.enter_context(open_jsonl_writer(out / "data.list"))
        rejects = stack.enter_context(open_jsonl_writer(out / "rejects.jsonl.gz"))
        tars = stack.enter_context(_ShardWriter(out / "shards", shard_size)) if shards else None
        for (raw, _), res in _ordered_map(prepare, _items(cuts_path), num_workers):
            report.cuts += 1
            if res.reason is not None:
                rejects.write(dumps(reject_record(raw, STAGE, res.reason)) + "\n")
                report.rejected += 1
                reasons[res.reason.split(":")[0]] += 1
            else:
                assert res.line is not None
                data_list.write(dumps(res.line) + "\n")
                if tars is not None:
                    assert res.wav is not None
                    tars.add(res.line, res.wav)
                report.exported += 1
                report.referenced += res.referenced
                report.materialised += not res.referenced
                seconds += res.line["extra"]["duration"]
            if progress is not None:
                progress(report)
    if tars is not None:
        _write_shards_list(out, tars.paths)
        report.shards = len(tars.paths)
    report.hours = seconds / 3600
    report.reasons = dict(sorted(reasons.items()))
    return report


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


class _Reject(Exception):
    """A cut that cannot be exported; the message is the reason written to rejects."""


@dataclass
class _Result:
    line: dict[str, Any] | None = None  # the data.list record
    wav: bytes | None = None  # WAV bytes for the tar (only when sharding)
    reason: str | None = None
    referenced: bool = False


def _clear_previous_export(out: Path) -> None:
    """Remove what an earlier export into `out` wrote (materialised wavs, tar shards, their list)."""
    for path in (out / "wav").glob("*.wav") if (out / "wav").is_dir() else ():
        path.unlink()
    for path in (out / "shards").glob("shard_*.tar") if (out / "shards").is_dir() else ():
        path.unlink()
    (out / "shards_list.txt").unlink(missing_ok=True)


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


def _prepare(item: tuple[dict[str, Any], str | None], wav_dir: str, want_bytes: bool) -> _Result:
    """Turn one raw cut into its data.list line (+ WAV bytes), or a reject reason.

    Runs in worker processes, so it takes and returns plain picklable data.
    """
    raw, pre_reason = item
    if pre_reason is not None:
        return _Result(reason=pre_reason)
    try:
        cut = deserialize_item(copy.deepcopy(raw))  # it pops keys from what it is given
        if not isinstance(cut, Cut):
            raise _Reject(f"bad cut: a {type(cut).__name__}, not a cut")
        task, txt = _target(cut)
    except _Reject as e:
        return _Result(reason=str(e))
    except Exception as e:  # a malformed cut is a reject, not a crash
        return _Result(reason=f"bad cut: {_brief(e)}")
    try:
        _check_sources_exist(cut)
        path = referenced_wav(cut)
        if path is not None:
            samples = sf.read(path, dtype="int16")[0] if want_bytes else None
            num_samples = cut.recording.num_samples
        else:
            samples = render_16k(cut)
            num_samples = len(samples)
        if num_samples == 0:
            raise ValueError("no audio samples (zero duration)")
    except Exception as e:  # any decoder/transform failure: recorded with its cause
        return _Result(reason=f"audio: {_brief(e)}")
    data = wav_bytes(samples) if samples is not None else None
    referenced = path is not None
    if path is None:
        assert data is not None
        path = os.path.join(wav_dir, safe_name(cut.id) + ".wav")
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    line = _line(cut, path, task, txt, num_samples / SAMPLING_RATE)
    return _Result(line=line, wav=data if want_bytes else None, referenced=referenced)


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


class _ShardWriter:
    """Tar shards of `size` utterances; each tar is written atomically and byte-deterministically."""

    def __init__(self, shard_dir: Path, size: int):
        self.dir, self.size = shard_dir, size
        self.paths: list[Path] = []
        self._stack: ExitStack | None = None
        self._tar: tarfile.TarFile | None = None
        self._count = 0

    def __enter__(self) -> _ShardWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._close(*exc)
        if exc[0] is None:  # drop shards a previous, larger export left behind
            for old in self.dir.glob("shard_*.tar"):
                if old not in self.paths:
                    old.unlink()

    def add(self, line: dict[str, Any], wav: bytes) -> None:
        if self._tar is None or self._count == self.size:
            self._close(None, None, None)
            self._open()
        assert self._tar is not None
        for name, data in _members(line, wav):
            self._tar.addfile(_tarinfo(name, len(data)), io.BytesIO(data))
        self._count += 1

    def _open(self) -> None:
        path = self.dir / f"shard_{len(self.paths):06d}.tar"
        self._stack = ExitStack()
        tmp = self._stack.enter_context(atomic_path(path))
        self._tar = self._stack.enter_context(tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT))
        self.paths.append(path)
        self._count = 0

    def _close(self, *exc: Any) -> None:
        if self._stack is not None:
            self._stack.__exit__(*exc)  # on an exception: no rename, temp file removed
            self._stack, self._tar = None, None


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


def _write_shards_list(out: Path, paths: list[Path]) -> None:
    with atomic_path(out / "shards_list.txt") as tmp:
        tmp.write_text("".join(f"{p}\n" for p in paths), encoding="utf-8")


def _ordered_map(
    fn: Callable[[Any], _Result], items: Iterable[Any], workers: int
) -> Iterator[tuple[Any, _Result]]:
    """(item, fn(item)) in input order; with workers > 1 a process pool runs a bounded window
    of items ahead, so neither inputs nor results pile up in memory."""
    if workers <= 1:
        for item in items:
            yield item, fn(item)
        return
    window = 4 * workers
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_one_thread) as pool:
        pending: deque = deque()
        for item in items:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) >= window:
                head, fut = pending.popleft()
                yield head, fut.result()
        while pending:
            head, fut = pending.popleft()
            yield head, fut.result()


def _one_thread() -> None:
    """Worker start-up: one intra-op thread each. Resampling runs in torch, and N workers each
    running a thread per core oversubscribe the CPU; parallelism comes from the processes."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)
