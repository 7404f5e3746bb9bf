"""Read OSUM/WeNet exports back the way the trainer's loaders see them, and validate every sample.

This is the other half of `osum.py`: whatever we export, we can read back and check. It consumes
the two layouts OSUM (WeNet) trains on:

- raw: `data.list`, one JSON object per line (`key`, `wav`, `txt`, `task`, `lang`, `speaker`,
  `emotion`, `gender`, `extra`), `wav` naming a 16 kHz WAV;
- shards: tar files listed in `shards_list.txt`, one member per field named `KEY.<field>`.

Tar members are grouped into samples by stripping a *known* field suffix, not by splitting at the
first dot, so keys containing dots survive. Validation is strict because OSUM is not: a task key it
does not know silently trains without a prompt, and a mislabeled target trains on garbage. Any
violation raises ValueError naming the sample's key.

This module deliberately does not import lhotse, so trainer-side tools can use it cheaply.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from osum_data.errors import OsumError
from osum_data.tasks import parse_target, registry

SAMPLING_RATE = 16000
# Per-utterance tar members, in the order the exporter writes them.
MEMBER_FIELDS = ("wav", "txt", "task", "lang", "speaker", "emotion", "gender", "duration", "extra")
# Keys of a data.list line, in the order the exporter writes them.
RAW_FIELDS = ("key", "wav", "txt", "task", "lang", "speaker", "emotion", "gender", "extra")
REQUIRED_MEMBERS = ("wav", "txt", "task")
# Allowed mismatch between the stated duration and the audio length (seconds).
DURATION_TOLERANCE = 0.001


@dataclass
class OsumSample:
    """One training sample as the OSUM loader would see it (audio decoded to float32 mono)."""

    key: str
    audio: np.ndarray
    sampling_rate: int
    txt: str
    task: str
    lang: str
    speaker: str
    emotion: str
    gender: str
    duration: float
    extra: dict[str, Any] = field(default_factory=dict)


class OsumDataError(OsumError, ValueError):
    """An OSUM list, shard or sample that does not hold what OSUM reads (exit code 1: the data)."""


def read_data_list(path: str | Path) -> Iterator[OsumSample]:
    """Stream validated samples from a raw `data.list`; audio is loaded from each line's `wav`
    (a relative `wav` is taken relative to the list's folder)."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise OsumDataError(f"{path}:{lineno}: not JSON: {e}") from None
            key = str(obj.get("key", f"<line {lineno}>"))
            missing = [k for k in RAW_FIELDS if k not in obj]
            if missing:
                raise OsumDataError(f"sample {key!r}: data.list line lacks {missing}")
            wav = obj["wav"]
            if isinstance(wav, str) and not os.path.isabs(wav):
                wav = str(Path(path).parent / wav)  # a `--relative` export: next to the list
            try:
                audio, sr = _decode(wav)
            except (OSError, RuntimeError, ValueError) as e:  # LibsndfileError is a RuntimeError
                raise OsumDataError(f"sample {key!r}: cannot read audio {obj['wav']!r}: {e}") from None
            extra = obj["extra"] or {}
            if not isinstance(extra, dict) or "duration" not in extra:
                raise OsumDataError(f"sample {key!r}: extra must be a dict holding 'duration'")
            yield _validated(
                OsumSample(
                    key=key,
                    audio=audio,
                    sampling_rate=sr,
                    txt=obj["txt"],
                    task=obj["task"],
                    lang=_text(obj["lang"]),
                    speaker=_text(obj["speaker"]),
                    emotion=_text(obj["emotion"]),
                    gender=_text(obj["gender"]),
                    duration=float(extra["duration"]),
                    extra=extra,
                )
            )


def read_shards(shards_list_path: str | Path) -> Iterator[OsumSample]:
    """Stream validated samples from every tar named in `shards_list.txt`, in list order.

    Relative shard paths are taken relative to the list file's folder.
    """
    base = Path(shards_list_path).parent
    with open(shards_list_path, encoding="utf-8") as f:
        shard_paths = [line.strip() for line in f if line.strip()]
    for shard in shard_paths:
        path = shard if os.path.isabs(shard) else str(base / shard)
        for key, members in _grouped_members(path):
            yield _sample_from_members(key, members, path)


def _grouped_members(path: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {field: bytes}) per utterance; a tar is read as a stream, like WeNet does."""
    key: str | None = None
    group: dict[str, bytes] = {}
    with tarfile.open(path, mode="r|*") as tar:
        for info in tar:
            if not info.isfile():
                continue
            stem, dot, suffix = info.name.rpartition(".")
            if not dot or suffix not in MEMBER_FIELDS:
                raise OsumDataError(f"{path}: member {info.name!r} has no known field suffix")
            if stem != key:
                if key is not None:
                    yield key, group
                key, group = stem, {}
            if suffix in group:
                raise OsumDataError(f"sample {stem!r}: member {suffix!r} appears twice in {path}")
            data = tar.extractfile(info)
            group[suffix] = data.read() if data is not None else b""
    if key is not None:
        yield key, group


def _sample_from_members(key: str, m: dict[str, bytes], path: str) -> OsumSample:
    missing = [f for f in REQUIRED_MEMBERS if f not in m]
    if missing:
        raise OsumDataError(f"sample {key!r}: shard {path} lacks member(s) {missing}")
    try:
        audio, sr = _decode(io.BytesIO(m["wav"]))
    except (RuntimeError, ValueError) as e:
        raise OsumDataError(f"sample {key!r}: cannot decode {key}.wav in {path}: {e}") from None
    try:
        extra = json.loads(m["extra"].decode("utf-8")) if "extra" in m else {}
    except ValueError as e:
        raise OsumDataError(f"sample {key!r}: {key}.extra in {path} is not JSON: {e}") from None
    if not isinstance(extra, dict):
        raise OsumDataError(f"sample {key!r}: {key}.extra in {path} is not a JSON object")
    if "duration" in m:
        duration = float(m["duration"].decode("utf-8"))
    elif "duration" in extra:
        duration = float(extra["duration"])
    else:
        duration = len(audio) / sr
    text = {
        f: m[f].decode("utf-8") if f in m else ""
        for f in ("txt", "task", "lang", "speaker", "emotion", "gender")
    }
    return _validated(
        OsumSample(key=key, audio=audio, sampling_rate=sr, duration=duration, extra=extra, **text)
    )


def _decode(src: Any) -> tuple[np.ndarray, int]:
    audio, sr = sf.read(src, dtype="float32", always_2d=True)
    if audio.shape[1] != 1:
        raise OsumDataError(f"audio has {audio.shape[1]} channels, expected mono")
    return np.ascontiguousarray(audio[:, 0]), int(sr)


def _validated(s: OsumSample) -> OsumSample:
    """Raise ValueError naming the key if `s` would train wrongly in OSUM."""
    if s.sampling_rate != SAMPLING_RATE:
        raise OsumDataError(f"sample {s.key!r}: sampling rate {s.sampling_rate}, expected {SAMPLING_RATE}")
    if not isinstance(s.txt, str) or not isinstance(s.task, str):
        raise OsumDataError(f"sample {s.key!r}: txt and task must be strings")
    if s.task not in registry().all_keys:
        raise OsumDataError(f"sample {s.key!r}: unknown task key {s.task!r}")
    if not s.txt:
        raise OsumDataError(f"sample {s.key!r}: empty txt")
    try:
        parse_target(s.task, s.txt)
    except (ValueError, KeyError) as e:  # FormatError and LabelError are ValueErrors
        raise OsumDataError(f"sample {s.key!r}: txt does not parse as {s.task!r}: {e}") from None
    actual = len(s.audio) / s.sampling_rate
    if abs(actual - s.duration) > DURATION_TOLERANCE:
        raise OsumDataError(f"sample {s.key!r}: duration {s.duration} but audio lasts {actual:.4f} s")
    return s


def _text(value: Any) -> str:
    return "" if value is None else str(value)
