"""KeSpeech: lhotse's recipe plus speaker gender and age from Metadata/, and the subdialect kept apart.

lhotse's prepare_kespeech reads Tasks/ASR/<part>/{wav.scp,text,utt2subdialect,utt2spk} line by line
with zip(): files of different lengths are silently truncated, lines in a different order crash an
assert, an utterance without text crashes the split, and a missing wav crashes the whole part from a
worker thread. It puts the subdialect into `language` and reads no speaker metadata. So we scan the
four files first (misaligned files fail naming the file and line; missing audio and empty text
become rejects), hand the recipe filtered copies of the lists (absolute wav paths, so recordings still
point at the corpus), then add gender and age from Metadata/spk2gender and Metadata/spk2age
(Kaldi-style `<speaker> <value>`; ages in years are bucketed, other values go through the corpus
map `kespeech`, so an unknown one is an error naming it and the file), set language "zh" and keep
the subdialect in custom.subdialect.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from lhotse.recipes.kespeech import KE_SPEECH_PARTS
from lhotse.recipes.kespeech import prepare_kespeech as lhotse_prepare_kespeech
from lhotse.utils import fastcopy

from osum_data.corpora.labels import SupervisionLabels
from osum_data.corpora.recipe import Expected, assemble, run_recipe
from osum_data.corpora.rejects import EMPTY_TEXT, MISSING_AUDIO
from osum_data.corpora.report import ImportReport
from osum_data.corpora.text import read_text
from osum_data.errors import UsageError
from osum_data.rejects import Reject

CORPUS = "kespeech"
LISTS = ("wav.scp", "text", "utt2subdialect", "utt2spk")


def prepare_kespeech(corpus_dir: Path, out_dir: Path, num_jobs: int = 4) -> ImportReport:
    root = Path(os.path.abspath(corpus_dir))
    tasks = root / "Tasks" / "ASR"
    if not tasks.is_dir():
        raise FileNotFoundError(f"no KeSpeech Tasks/ASR/ folder in {corpus_dir}")
    parts = [p for p in KE_SPEECH_PARTS if (tasks / p / "wav.scp").is_file()]
    genders = read_kaldi_map(root / "Metadata" / "spk2gender")
    ages = read_kaldi_map(root / "Metadata" / "spk2age")
    expected: list[Expected] = []
    with tempfile.TemporaryDirectory() as scratch:
        for part in parts:
            entries, kept = scan_part(root, part)
            expected += entries
            write_lists(Path(scratch) / "Tasks" / "ASR" / part, kept)
        manifests = run_recipe(
            "prepare_kespeech",
            lhotse_prepare_kespeech,
            Path(scratch),
            output_dir=None,
            dataset_parts=parts,
            num_jobs=num_jobs,
        )

    def relabel(sup, part):
        speaker = sup.speaker or ""
        labels = SupervisionLabels(CORPUS, where="Metadata/spk2gender")
        labels.set_gender(genders.get(speaker))
        labels.where = "Metadata/spk2age"
        labels.set_age(ages.get(speaker), raw_key="age_raw")
        custom = {**(sup.custom or {}), "subdialect": sup.language}
        return labels.apply(fastcopy(sup, language="zh", custom=custom))

    ordered = {p: manifests[p] for p in parts if p in manifests}
    return assemble(CORPUS, Path(out_dir), expected, ordered, relabel, expected_labels=("gender", "age"))


def read_kaldi_map(path: Path) -> dict[str, str]:
    """`<key> <value>` lines -> dict; {} when the file is absent."""
    if not path.is_file():
        return {}
    out = {}
    for line in read_text(path).splitlines():
        fields = line.split(maxsplit=1)
        if len(fields) == 2:
            out[fields[0]] = fields[1].strip()
    return out


def scan_part(root: Path, part: str) -> tuple[list[Expected], list[tuple[str, ...]]]:
    """Expected utterances of a part and the aligned (id, wav, text, subdialect, speaker) lines to keep."""
    folder = root / "Tasks" / "ASR" / part
    columns = []
    for name in LISTS:
        lines = [ln for ln in read_text(folder / name).splitlines() if ln.strip()]
        columns.append([ln.strip().split(maxsplit=1) for ln in lines])
    lengths = {name: len(col) for name, col in zip(LISTS, columns, strict=True)}
    if len(set(lengths.values())) != 1:
        raise UsageError(
            f"{folder}: the lists differ in length {lengths}; lhotse would silently truncate them"
        )
    entries, kept = [], []
    for index, fields in enumerate(zip(*columns, strict=True)):
        ids = [f[0] for f in fields]
        if len(set(ids)) != 1:
            raise UsageError(
                f"{folder}: line {index + 1} names different utterances {dict(zip(LISTS, ids, strict=True))}"
            )
        uid = ids[0]
        wav = root / fields[0][1].strip() if len(fields[0]) > 1 else None
        text = fields[1][1].strip() if len(fields[1]) > 1 else ""
        source = f"Tasks/ASR/{part}/text:{index + 1}"
        problem = None
        if wav is None or not wav.is_file():
            problem = Reject(
                MISSING_AUDIO, f"audio {fields[0][1] if wav else '(none)'} of {uid} does not exist"
            )
        elif not text:
            problem = Reject(EMPTY_TEXT, f"empty transcript for {uid}")
        else:
            dialect = fields[2][1] if len(fields[2]) > 1 else ""
            speaker = fields[3][1] if len(fields[3]) > 1 else ""
            kept.append((uid, str(wav), text, dialect, speaker))
        entries.append(Expected(uid, part, wav, source, problem))
    return entries, kept


def write_lists(folder: Path, kept: list[tuple[str, ...]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for column, name in enumerate(LISTS, start=1):
        lines = [f"{row[0]} {row[column]}" for row in kept]
        (folder / name).write_text("".join(f"{ln}\n" for ln in lines), encoding="utf-8")
