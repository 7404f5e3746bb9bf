"""The `export_osum` stage: one runner shard of the OSUM/WeNet export (osum.py drives it).

Per shard it writes, in one part folder of the shard's files folder (per mix group with
`group_by_mix`): the `data.list` piece, the materialised 16 kHz WAVs under `wav/`, and with `shards`
one tar with a member per field (MEMBER_FIELDS). A cut that is exactly a whole 16 kHz mono int16 WAV
file is referenced in place; anything else is rendered through lhotse. A dialect (osum_dialect.py)
rewrites each line's tags and `extra` fields for the OSUM trainer it is written for.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import soundfile as sf
from lhotse import MonoCut
from lhotse.cut import Cut

from osum_data.export.engine import relative_or_absolute
from osum_data.export.media import referenced_wav, render_16k, safe_name, wav_bytes
from osum_data.export.osum_dialect import Dialect, DialectError, convert, load_dialect
from osum_data.export.osum_reader import MEMBER_FIELDS, SAMPLING_RATE
from osum_data.export.samples import FormatStage, audio_reject, checked_span, task_target
from osum_data.manifest_io import atomic_path, dumps, safe_file_name
from osum_data.rejects import Reject
from osum_data.run.stage import register_stage

STAGE = "export_osum"
# Supervision `custom` fields carried into `extra` (DESIGN section 3), when set.
SUPERVISION_EXTRAS = ("age", "age_years", "style", "events", "answer", "label_source", "confidence")


@dataclass
class OsumItem:
    line: dict[str, Any]  # the data.list record
    wav: bytes | None  # the tar member's WAV bytes (when sharding)
    materialised: bool  # its WAV was written under wav/ (else the source file is referenced)

    @property
    def duration(self) -> float:
        return self.line["extra"]["duration"]


def mix_group(cut: Cut) -> str:
    """Where a mix's cut goes in a grouped export: `train/<task>/<dataset>/x<copies>` (the copies OSUM
    takes of it per pass, osum_config.py), `dev/<task>`, `test/<task>`."""
    mix = (cut.custom or {}).get("mix") or {}
    if mix.get("split") == "train":
        return f"train/{mix['task']}/{mix['dataset']}/x{int(mix.get('copies', 1))}"
    return f"{mix.get('split', 'other')}/{mix.get('task', 'other')}"


@register_stage(STAGE, version=2)  # 2: files in per-call parts
class ExportOsumStage(FormatStage):
    """One runner shard of the OSUM export: its data.list piece, materialised wavs and (with
    `shards`) its tar, in the shard's files folder; `out_dir` is where they will be linked."""

    stage_name = STAGE

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

    def group(self, cut: Cut) -> str:
        return mix_group(cut) if self.group_by_mix else ""

    def count(self, item: OsumItem, counters: dict[str, Any]) -> None:
        key = "materialised" if item.materialised else "referenced"
        counters[key] = counters.get(key, 0) + 1
        counters["seconds"] += item.duration

    def prepare(self, cut: Cut, folder: Path) -> OsumItem:
        task, txt = task_target(cut)
        checked_span(cut)
        try:
            path = None if self.relative else referenced_wav(cut)
            if path is not None:
                samples = sf.read(path, dtype="int16")[0] if self.shards else None
                num_samples = cut.recording.num_samples
                if num_samples == 0:
                    raise ValueError("no audio samples (zero duration)")
            else:
                samples = render_16k(cut)
                num_samples = len(samples)
        except Exception as e:  # any decoder/transform failure: recorded with its cause
            raise audio_reject(e) from None
        data = wav_bytes(samples) if samples is not None else None
        materialised = path is None
        name = f"{safe_name(cut.id)}.wav"
        if materialised:
            group = self.group(cut)
            path = relative_or_absolute(self.out / group / "wav" / name, self.out / group, self.relative)
        line = data_list_line(cut, path, task, txt, num_samples / SAMPLING_RATE)
        if self.dialect is not None:
            apply_dialect(line, self.dialect, cut)
        if materialised:  # written now, once nothing can reject the cut: a batch holds no audio
            with atomic_path(folder / "wav" / name) as tmp:
                tmp.write_bytes(data)
        return OsumItem(line=line, wav=data if self.shards else None, materialised=materialised)

    def write_split(self, items: list[OsumItem], folder: Path) -> None:
        with atomic_path(folder / "data.list") as tmp:
            tmp.write_text("".join(dumps(x.line) + "\n" for x in items), encoding="utf-8")
        if self.shards and items:
            with (
                atomic_path(folder / "shard.tar") as tmp,
                tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar,
            ):
                for x in items:
                    for member, data in _members(x.line, x.wav):
                        tar.addfile(_tarinfo(member, len(data)), io.BytesIO(data))


def apply_dialect(line: dict[str, Any], dialect: Dialect, cut: Cut) -> None:
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
        raise Reject("dialect", f"dialect: {e}") from None
    line["txt"] = txt
    line["extra"].update(extra)


def data_list_line(cut: Cut, wav: str, task: str, txt: str, duration: float) -> dict[str, Any]:
    """The cut's `data.list` record: WeNet's fields, "" for unknown ones, the rest in `extra`."""
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
