"""CREMA-D (no lhotse recipe): 91 actors, 12 sentences, 6 emotions, everything in the file name.

Layout: AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav (e.g. 1001_DFA_ANG_XX.wav) and
VideoDemographics.csv (ActorID, Age, Sex, Race, Ethnicity). The sentence codes' words and the
intensity codes are in conventions.yaml; gender and age come from the demographics table (age in
years, bucketed by labels.yaml). Quirks handled: a few files are header-only (no samples, e.g.
1076_MTI_SAD_XX.wav in some copies): rejected as empty audio; a name that does not have the four
parts, or an unknown sentence code, is rejected naming the file.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from pathlib import Path

from osum_data.corpora.rejects import MALFORMED_LINE, UNKNOWN_LABEL
from osum_data.corpora.report import ImportReport
from osum_data.corpora.rows import Row, conventions, field_count_error, import_rows, relative
from osum_data.corpora.text import read_text
from osum_data.errors import UsageError
from osum_data.rejects import Reject

CORPUS = "cremad"


def prepare_cremad(corpus_dir: Path, out_dir: Path) -> ImportReport:
    root = Path(os.path.abspath(corpus_dir))
    audio_dir = next((d for d in (root / "AudioWAV", root) if d.is_dir() and any(d.glob("*.wav"))), None)
    if audio_dir is None:
        raise FileNotFoundError(f"no CREMA-D AudioWAV/*.wav under {corpus_dir}")
    demographics = read_demographics(root / "VideoDemographics.csv")
    rows = scan(root, audio_dir, demographics)
    return import_rows(CORPUS, Path(out_dir), [(None, rows)], expected_labels=("gender", "age", "emotion"))


def read_demographics(path: Path) -> dict[str, dict[str, str]]:
    """ActorID -> {Age, Sex, ...}; {} when the table is absent (cuts then lack gender and age)."""
    if not path.is_file():
        return {}
    with io.StringIO(read_text(path), newline="") as f:
        reader = csv.DictReader(f)
        if not {"ActorID", "Age", "Sex"} <= set(reader.fieldnames or []):
            raise UsageError(f"{path}: expected columns ActorID, Age, Sex; got {reader.fieldnames}")
        out = {}
        for row in reader:
            bad = field_count_error(row, reader.line_num)
            if bad is not None:
                raise UsageError(f"{path}: {bad.detail}; fix the demographics table")
            out[row["ActorID"].strip()] = row
        return out


def scan(root: Path, audio_dir: Path, demographics: dict[str, dict[str, str]]) -> Iterator[Row]:
    names = conventions(CORPUS)
    for wav in sorted(audio_dir.glob("*.wav")):
        parts = wav.stem.split("_")
        source = relative(wav, root)
        if len(parts) != 4:
            problem = Reject(MALFORMED_LINE, f"{wav.name} is not <actor>_<sentence>_<emotion>_<level>.wav")
            yield Row(id=wav.stem, source=source, audio=wav, problem=problem)
            continue
        actor, sentence, emotion, level = parts
        problem = None
        if sentence not in names["sentence"]:
            problem = Reject(UNKNOWN_LABEL, f"unknown CREMA-D sentence code {sentence!r} in {wav.name}")
        elif level not in names["level"]:
            problem = Reject(UNKNOWN_LABEL, f"unknown CREMA-D intensity code {level!r} in {wav.name}")
        person = demographics.get(actor, {})
        yield Row(
            id=wav.stem,
            source=source,
            audio=wav,
            text=names["sentence"].get(sentence),
            speaker=actor,
            language="en",
            gender=person.get("Sex"),
            age=person.get("Age"),
            emotion=emotion,
            custom={"sentence": sentence, "intensity": names["level"].get(level)},
            problem=problem,
        )
