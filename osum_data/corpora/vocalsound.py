"""VocalSound (no lhotse recipe): 21k recordings of laughter, sighs, coughs, throat clearing, sneezes
and sniffs from 3,365 speakers, with speaker sex and age.

Layout (vs_release_16k.zip / _44k): audio_16k/ or audio_44k/ with files named
<f|m><speaker>_<session>_<label>.wav (f0003_0_cough.wav: female speaker 0003, first session),
datafiles/{tr,val,te}.json ({"data": [{"wav": ..., "labels": ...}]}) naming each split's files, and
meta/all_meta.json with per-speaker [spk_id, gender, age, country, native language, health]. The
label and the speaker's sex are read from the file name (always present); age from the meta file
when there is one, whether it is keyed by speaker id or a list of records. Files that no split
lists go to a part named `unassigned`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from osum_data.corpora.rejects import MALFORMED_LINE
from osum_data.corpora.report import ImportReport
from osum_data.corpora.rows import Row, conventions, import_rows, relative
from osum_data.errors import UsageError
from osum_data.rejects import Reject

CORPUS = "vocalsound"
_NAME = re.compile(r"([fm])(\d+)_(\d+)_([a-z]+)")


def prepare_vocalsound(corpus_dir: Path, out_dir: Path) -> ImportReport:
    root = locate(Path(os.path.abspath(corpus_dir)))
    audio_dir = next(
        d for d in (root / "audio_16k", root / "audio_44k", root) if d.is_dir() and any(d.glob("*.wav"))
    )
    ages = read_ages(root / "meta" / "all_meta.json")
    split_of = read_splits(root / "datafiles")
    files = sorted(audio_dir.glob("*.wav"))
    names = list(conventions(CORPUS)["split_files"]) if split_of else [None]
    if split_of and any(f.name not in split_of for f in files):
        names.append("unassigned")

    def part(name: str | None) -> Iterator[Row]:
        for wav in files:
            if name is None or split_of.get(wav.name, "unassigned") == name:
                yield _row(root, wav, name, ages)

    return import_rows(CORPUS, Path(out_dir), [(n, part(n)) for n in names], expected_labels=("events",))


def locate(corpus_dir: Path) -> Path:
    for root in (corpus_dir, corpus_dir / "data"):
        if any((root / d).is_dir() for d in ("audio_16k", "audio_44k")) or any(root.glob("*_*_*.wav")):
            return root
    raise FileNotFoundError(f"no VocalSound audio_16k/ or audio_44k/ under {corpus_dir}")


def read_splits(datafiles: Path) -> dict[str, str]:
    """File name -> split, from the datafiles json lists (empty if there are none)."""
    split_of: dict[str, str] = {}
    for split, name in conventions(CORPUS)["split_files"].items():
        path = datafiles / name
        if path.is_file():
            for entry in json.loads(path.read_text(encoding="utf-8")).get("data", []):
                split_of[Path(str(entry["wav"])).name] = split
    return split_of


def read_ages(path: Path) -> dict[str, str]:
    """Speaker id (as in file names, e.g. f0003, and without the sex letter) -> age string."""
    if not path.is_file():
        return {}
    data: Any = json.loads(path.read_text(encoding="utf-8"))
    records = data.items() if isinstance(data, dict) else ((None, r) for r in data)
    ages = {}
    for key, record in records:
        if isinstance(record, dict):
            spk, age = record.get("spk_id", key), record.get("age")
        elif isinstance(record, list | tuple):
            spk, fields = (key, list(record)) if key is not None else (record[0], list(record[1:]))
            age = fields[1] if len(fields) > 1 else None  # [gender, age, country, language, health]
        else:
            raise UsageError(f"{path}: unexpected speaker record {record!r}")
        if spk is not None and age not in (None, ""):
            ages[str(spk).strip().lower()] = str(age)
    return ages


def _row(root: Path, wav: Path, split: str | None, ages: dict[str, str]) -> Row:
    match = _NAME.fullmatch(wav.stem)
    if match is None:
        problem = Reject(MALFORMED_LINE, f"{wav.name} is not <f|m><speaker>_<session>_<label>.wav")
        return Row(id=wav.stem, source=relative(wav, root), audio=wav, problem=problem)
    sex, number, session, label = match.groups()
    speaker = f"{sex}{number}"
    return Row(
        id=wav.stem,
        source=relative(wav, root),
        audio=wav,
        speaker=speaker,
        gender=conventions(CORPUS)["gender_prefix"][sex],
        age=ages.get(speaker) or ages.get(number),
        events=[label],
        custom={"subset": split, "session": int(session)},
    )
