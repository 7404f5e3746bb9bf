"""VoxCeleb1/2 with speaker gender from vox1_meta.csv / vox2_meta.csv.

Not lhotse's recipe: prepare_voxceleb downloads the VoxCeleb1 trial list from the internet on every
call (it fails offline), raises KeyError for a speaker missing from the meta table, needs a process
pool and holds every utterance in memory. This importer walks the folders itself in sorted order and
streams (VoxCeleb2 has a million utterances), with lhotse's cut ids (<speaker>-<video>-<utterance>).

Layout: a folder holding vox1_meta.csv and wav/<id>/<video>/<n>.wav (VoxCeleb1; the dev and test zips
unpack into the same wav/), and/or a folder holding vox2_meta.csv and {dev,test}/aac/<id>/<video>/<n>.m4a
(VoxCeleb2). Meta quirks: vox1_meta.csv is tab-separated despite its name
(`id10001<TAB>A.J._Buckley<TAB>m<TAB>Ireland<TAB>dev`); vox2_meta.csv is comma-separated with spaces
around each field (`id00012 ,n000012 ,m ,dev `). VoxCeleb2's .m4a audio is demuxed to FLAC once
(media.py). A speaker missing from the meta table keeps its cuts without gender (counted in the report).
Parts: vox1_dev, vox1_test, vox2_dev, vox2_test (the meta table's Set column / the folder).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

from osum_data.corpora.report import ImportReport
from osum_data.corpora.rows import Row, import_rows, relative
from osum_data.errors import UsageError

CORPUS = "voxceleb"


def prepare_voxceleb(corpus_dir: Path, out_dir: Path) -> ImportReport:
    root = Path(os.path.abspath(corpus_dir))
    parts = []
    for meta_path in _shallow(root, "vox1_meta.csv")[:1]:
        meta, wav_dir = read_meta(meta_path), meta_path.parent / "wav"
        splits = ["dev", "test"]
        if any(d.name not in meta for d in _sorted_dirs(wav_dir)):
            splits.append("unlisted")  # speaker folders the meta table does not know: no gender, no set
        parts += [(f"vox1_{split}", _vox1(root, wav_dir, meta_path, meta, split)) for split in splits]
    for meta_path in _shallow(root, "vox2_meta.csv")[:1]:
        meta = read_meta(meta_path)
        parts += [
            (f"vox2_{split}", _vox2(root, meta_path.parent, meta_path, meta, split))
            for split in ("dev", "test")
        ]
    if not parts:
        raise FileNotFoundError(f"no vox1_meta.csv or vox2_meta.csv under {corpus_dir} (or one level below)")
    return import_rows(CORPUS, Path(out_dir), parts, expected_labels=("gender",), check_duplicates=False)


def _shallow(root: Path, name: str) -> list[Path]:
    candidates = (root / name, *(d / name for d in sorted(root.iterdir()) if d.is_dir()))
    return [p for p in candidates if p.is_file()]


def read_meta(path: Path) -> dict[str, dict[str, str]]:
    """Speaker id -> {name, gender, nationality, set}; tab or comma separated, fields stripped."""
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    first = text.splitlines()[0] if text else ""
    delimiter = "\t" if "\t" in first else ","
    rows = list(csv.reader(text.splitlines(), delimiter=delimiter))
    header = [h.strip().lower() for h in rows[0]]
    meta = {}
    for lineno, fields in enumerate(rows[1:], start=2):
        fields = [f.strip() for f in fields]
        if not any(fields):
            continue
        if len(fields) != len(header):
            raise UsageError(f"{path}:{lineno}: {len(fields)} fields, the header has {len(header)}")
        record = dict(zip(header, fields, strict=True))
        speaker = fields[0]
        meta[speaker] = {
            "gender": record.get("gender", ""),
            "set": record.get("set", ""),
            "nationality": record.get("nationality", ""),
            "name": next((v for k, v in record.items() if k.startswith("vggface")), ""),
        }
    return meta


def _sorted_dirs(path: Path) -> list[Path]:
    return sorted((d for d in path.iterdir() if d.is_dir()), key=lambda d: d.name) if path.is_dir() else []


def _utterances(speaker_dir: Path, suffix: str) -> Iterator[Path]:
    for video in _sorted_dirs(speaker_dir):
        yield from sorted(p for p in video.iterdir() if p.suffix == suffix)


def _vox1(root: Path, wav_dir: Path, meta_path: Path, meta: dict, split: str) -> Iterator[Row]:
    for speaker in _sorted_dirs(wav_dir):
        info = meta.get(speaker.name)
        if (info["set"] if info else "unlisted") != split:
            continue
        for path in _utterances(speaker, ".wav"):
            yield _row(root, path, info, meta_path, split)


def _vox2(root: Path, base: Path, meta_path: Path, meta: dict, split: str) -> Iterator[Row]:
    for audio_dir in (base / split / "aac", base / split):
        if audio_dir.is_dir() and any(d.name.startswith("id") for d in _sorted_dirs(audio_dir)):
            break
    else:
        return
    for speaker in _sorted_dirs(audio_dir):
        for path in _utterances(speaker, ".m4a"):
            yield _row(root, path, meta.get(speaker.name), meta_path, split)


def _row(root: Path, path: Path, info: dict | None, meta_path: Path, split: str) -> Row:
    speaker, video = path.parent.parent.name, path.parent.name
    return Row(
        id=f"{speaker}-{video}-{path.stem}",
        source=f"{relative(path, root)} (speaker in {relative(meta_path, root)})",
        audio=path,
        speaker=speaker,
        gender=(info or {}).get("gender"),
        custom={
            "subset": split,
            "video": video,
            "nationality": (info or {}).get("nationality"),
            "speaker_name": (info or {}).get("name"),
        },
    )
