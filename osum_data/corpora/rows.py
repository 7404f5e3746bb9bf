"""Importers written from scratch (no lhotse recipe) describe each utterance as a `Row`; this turns rows
into cuts, streaming, so a corpus of any size imports in flat memory.

An importer's scan yields rows with the corpus's raw values (file, transcript, gender/age/emotion/
event strings) and where each came from; `import_rows` maps the labels through the corpus maps,
probes the audio and writes every row as exactly one cut or one reject with a reason, so the
ImportReport invariant rows == cuts + rejected holds by construction.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from lhotse import Recording, SupervisionSegment
from lhotse.cut import MonoCut
from lhotse.qa import validate

from osum_data.corpora.audio import probe
from osum_data.corpora.labels import SupervisionLabels
from osum_data.corpora.media import demux_to_flac, needs_demux
from osum_data.corpora.output import write_import
from osum_data.corpora.rejects import (
    DUPLICATE_ID,
    EMPTY_AUDIO,
    EMPTY_ID,
    INVALID_CUT,
    MISSING_AUDIO,
    WRONG_FIELD_COUNT,
    RejectLog,
)
from osum_data.corpora.report import ImportReport
from osum_data.rejects import Reject
from osum_data.yaml_config import load_yaml_file

DEMUX_DIR = "audio"  # OUT_DIR/audio/<cut id>.flac for audio demuxed from video containers


@dataclass
class Row:
    """One utterance as the corpus files describe it (raw values, mapped when the cut is built)."""

    id: str
    source: str  # where a user finds it: "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt:3"
    audio: Path | None
    text: str | None = None
    speaker: str | None = None
    language: str | None = None
    gender: str | None = None
    age: str | None = None
    emotion: str | None = None
    events: Sequence[str] = ()
    custom: dict[str, Any] = field(default_factory=dict)
    problem: Reject | None = None  # known while scanning (e.g. a malformed file name)


Parts = Iterable[tuple[str | None, Iterable[Row]]]


def import_rows(
    corpus: str,
    out_dir: Path,
    parts: Parts,
    expected_labels: Sequence[str] = (),
    check_duplicates: bool = True,
) -> ImportReport:
    """Build and write every row of every part (part None: one unnamed part, cuts.jsonl.gz only).

    `check_duplicates=False` is for corpora whose ids come from unique file paths (VoxCeleb's
    million utterances), where remembering every id would only cost memory.
    """
    builder = _Builder(corpus, Path(out_dir), check_duplicates)
    rejects = RejectLog(corpus)

    def cuts(rows: Iterable[Row]) -> Iterator[MonoCut]:
        for row in rows:
            builder.rows += 1
            try:
                yield builder.build(row)
            except Reject as err:
                audio = str(row.audio) if row.audio else None
                rejects.row(err, row.id, audio=audio, source=row.source, subset=row.custom.get("subset"))

    return write_import(
        Path(out_dir),
        corpus,
        ((part, cuts(rows)) for part, rows in parts),
        rejects,
        rows=lambda: builder.rows,
        expected_labels=expected_labels,
    )


class _Builder:
    def __init__(self, corpus: str, out_dir: Path, check_duplicates: bool):
        self.corpus = corpus
        self.out_dir = out_dir
        self.check_duplicates = check_duplicates
        self.seen: dict[str, str] = {}
        self.rows = 0

    def build(self, row: Row) -> MonoCut:
        if row.problem is not None:
            raise row.problem
        self._claim(row)
        labels = SupervisionLabels(self.corpus, where=row.source)
        labels.set_gender(row.gender)
        labels.set_age(row.age)
        labels.set_category("emotion", row.emotion)
        labels.set_events(list(row.events))
        recording = self._recording(row)
        if recording.num_samples == 0:
            raise Reject(EMPTY_AUDIO, f"audio file {str(row.audio)!r} has no samples")
        channel = recording.channel_ids[0]
        sup = SupervisionSegment(
            id=row.id,
            recording_id=recording.id,
            start=0.0,
            duration=recording.duration,
            channel=channel,
            text=(row.text or "").strip() or None,
            language=row.language,
            speaker=row.speaker,
            custom={k: v for k, v in row.custom.items() if v not in (None, "")} or None,
        )
        cut = MonoCut(
            id=row.id,
            start=0.0,
            duration=recording.duration,
            channel=channel,
            recording=recording,
            supervisions=[labels.apply(sup)],
        )
        try:
            validate(cut)
        except AssertionError as exc:
            raise Reject(INVALID_CUT, f"lhotse rejects the cut: {exc}") from None
        return cut

    def _claim(self, row: Row) -> None:
        if not row.id:
            raise Reject(EMPTY_ID, "empty id")
        if not self.check_duplicates:
            return
        if row.id in self.seen:
            raise Reject(DUPLICATE_ID, f"duplicate id {row.id!r} (first from {self.seen[row.id]})")
        self.seen[row.id] = row.source

    def _recording(self, row: Row) -> Recording:
        if row.audio is None:
            raise Reject(MISSING_AUDIO, "no audio file for this row")
        path = Path(os.path.abspath(row.audio))  # lhotse stores the path as given
        if needs_demux(path):
            path = demux_to_flac(path, self.out_dir / DEMUX_DIR / f"{row.id}.flac")
        return probe(path, row.id)


@cache
def _conventions() -> dict[str, Any]:
    return load_yaml_file(Path(__file__).with_name("conventions.yaml"))


def conventions(corpus: str) -> dict[str, Any]:
    """The file-naming tables of one corpus from conventions.yaml."""
    return _conventions()[corpus]


def field_count_error(record: dict[str | None, Any], line: int) -> Reject | None:
    """A `wrong_field_count` error for a csv.DictReader record whose row is short (DictReader fills
    the missing fields with None) or long (the extra fields go under the key None), else None;
    `line` is the reader's line_num, which names the row in the message."""
    extra = record.get(None) or []
    missing = [k for k, v in record.items() if k is not None and v is None]
    if not extra and not missing:
        return None
    header = sum(1 for k in record if k is not None)
    fields = header - len(missing) + len(extra)
    return Reject(WRONG_FIELD_COUNT, f"line {line} has {fields} fields, the header has {header}")


def relative(path: Path, root: Path) -> str:
    """`path` relative to the corpus root, for sources and messages."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
