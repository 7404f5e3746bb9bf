"""The generic importer: a metadata.tsv / metadata.csv table of audio paths, transcripts and labels.

This is how a user brings any corpus we have no recipe for. Each data row becomes one cut whose id
is the row id (a MultiCut over all channels when the file has several); rows with start/end cut a
segment out of their audio, and several rows may share one file (the recording id is derived from
the audio path, so they share one Recording). Each bad row is rejected with its row number and a
reason naming the value; nothing is dropped silently. Rows are streamed (the table is never held in
memory) and counted from the file itself. An empty `text` is allowed (a folder of noise clips).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path, PurePath

from lhotse import Recording, SupervisionSegment
from lhotse.cut import Cut, MonoCut, MultiCut
from lhotse.qa import validate

from osum_data.corpora.audio import probe
from osum_data.corpora.labels import SupervisionLabels
from osum_data.corpora.output import write_import
from osum_data.corpora.rejects import (
    BAD_TIME,
    DUPLICATE_ID,
    EMPTY_AUDIO,
    EMPTY_ID,
    END_BEYOND_DURATION,
    END_NOT_AFTER_START,
    INVALID_CUT,
    MALFORMED_LINE,
    MISSING_AUDIO,
    UNSAFE_ID,
    WRONG_FIELD_COUNT,
    RejectLog,
)
from osum_data.corpora.report import ImportReport
from osum_data.corpora.table import Table, TableRow, find_metadata
from osum_data.rejects import Reject
from osum_data.sources import id_problem

CORPUS = "tsv"  # corpus name for label maps: corpus_maps.yaml may hold a `tsv:` table
REQUIRED = ("id", "audio", "text")
OPTIONAL = ("language", "speaker", "gender", "age", "emotion", "style", "events", "start", "end")
OPTIONAL += ("label_source",)
# `label_source`: where the row's labels come from when not from human annotation of real speech
# (`tts:espeak-ng` for synthetic personas, `model:x`); default `corpus`.
_LABEL_SOURCE = re.compile(r"[a-z][a-z+]*(?::[\w.+/-]+)?")
# An end this close past the end of the audio is rounding in the user's table: clip it silently.
END_TOLERANCE_S = 0.01
RECORDING_CACHE = 4096


def prepare_tsv(corpus_dir: Path, out_dir: Path) -> ImportReport:
    """Import CORPUS_DIR/metadata.tsv (or .csv) into OUT_DIR/cuts.jsonl.gz + rejects.jsonl.gz.

    Cuts stream to disk as rows are built, so memory does not grow with the number of cuts.
    """
    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    table = Table(find_metadata(corpus_dir), REQUIRED, OPTIONAL)
    rows = table.count_rows()  # from the file itself: the report checks rows = cuts + rejected
    rejects = RejectLog(CORPUS)
    cuts = _build_all(table.rows(), _CutBuilder(corpus_dir), rejects)
    report = write_import(out_dir, CORPUS, [(None, cuts)], rejects, rows)
    if table.ignored:
        note = f"ignored column(s) of {table.path.name} that no label reads: {', '.join(table.ignored)}"
        report = dataclasses.replace(report, notes=(*report.notes, note))
    return report


def _build_all(rows: Iterator[TableRow], builder: _CutBuilder, rejects: RejectLog) -> Iterator[Cut]:
    for row in rows:
        try:
            yield builder.build(row)
        except Reject as err:
            values = row.values
            item_id = values.get("id") or f"row-{row.number}"  # a row without an id is named by its number
            rejects.row(err, item_id, row=row.number, audio=values.get("audio") or None)


class _CutBuilder:
    """Turns table rows into cuts; remembers ids seen and recordings probed across rows."""

    def __init__(self, corpus_dir: Path):
        self.corpus_dir = corpus_dir
        self.first_row: dict[str, int] = {}
        # Recently probed files (rows of one file are usually adjacent); a file probed again after
        # eviction gives an identical Recording, so the bound costs time, never correctness.
        self.recordings: OrderedDict[Path, Recording | Reject] = OrderedDict()

    def build(self, row: TableRow) -> Cut:
        if row.field_error:
            raise Reject(row.error_code or WRONG_FIELD_COUNT, row.field_error)
        v = {k: row.values.get(k, "").strip() for k in REQUIRED + OPTIONAL}
        cut_id = self._claim_id(v["id"], row.number)
        labels = SupervisionLabels(CORPUS)
        labels.set_gender(v["gender"])
        labels.set_age(v["age"])
        labels.set_category("emotion", v["emotion"])
        labels.set_category("style", v["style"])
        labels.set_events(v["events"])
        if v["label_source"]:
            if not _LABEL_SOURCE.fullmatch(v["label_source"]):
                raise Reject(
                    MALFORMED_LINE,
                    f"label_source {v['label_source']!r} is not kind[:name] (e.g. corpus, tts:espeak-ng)",
                )
            labels.sources = {k: v["label_source"] for k in labels.sources}
        start = _seconds("start", v["start"])
        end = _seconds("end", v["end"])
        if start is not None and end is not None and end <= start:
            raise Reject(END_NOT_AFTER_START, f"end {v['end']} is not after start {v['start']}")
        recording = self._recording(v["audio"])
        offset, duration = _span(start, end, recording.duration)
        # Every channel is imported: a stereo file stays a 2-channel cut, so the pipeline's
        # audio_policy can see it and reject, take the first channel or downmix.
        channels = recording.channel_ids
        channel = channels[0] if len(channels) == 1 else list(channels)
        sup = SupervisionSegment(
            id=cut_id,
            recording_id=recording.id,
            start=0.0,
            duration=duration,
            channel=channel,
            text=row.values.get("text", "").strip(),
            language=v["language"] or None,
            speaker=v["speaker"] or None,
        )
        cut_type = MonoCut if len(channels) == 1 else MultiCut
        cut = cut_type(
            id=cut_id,
            start=offset,
            duration=duration,
            channel=channel,
            recording=recording,
            supervisions=[labels.apply(sup)],
        )
        try:
            validate(cut)
        except AssertionError as exc:
            raise Reject(INVALID_CUT, f"lhotse rejects the cut: {exc}") from None
        return cut

    def _claim_id(self, cut_id: str, number: int) -> str:
        if not cut_id:
            raise Reject(EMPTY_ID, "empty id")
        why = id_problem(cut_id)
        if why is not None:
            raise Reject(UNSAFE_ID, f"row {number}: {why}")
        if cut_id in self.first_row:
            raise Reject(
                DUPLICATE_ID, f"duplicate id {cut_id!r} (first used in row {self.first_row[cut_id]})"
            )
        self.first_row[cut_id] = number
        return cut_id

    def _recording(self, audio: str) -> Recording:
        """Probe each file once; rows sharing a file share the Recording (or its error)."""
        if not audio:
            raise Reject(MISSING_AUDIO, "empty audio path")
        path = Path(audio) if os.path.isabs(audio) else self.corpus_dir / audio
        if path.is_dir():
            raise Reject(MISSING_AUDIO, f"audio path {audio!r} is a directory, not an audio file")
        key = Path(os.path.abspath(path))
        if key in self.recordings:
            self.recordings.move_to_end(key)
        else:
            try:
                rec = probe(key, self._recording_id(key))
                if rec.num_samples == 0:
                    raise Reject(EMPTY_AUDIO, f"audio file {audio!r} holds no samples (a header only)")
                self.recordings[key] = rec
            except Reject as err:
                self.recordings[key] = err
            if len(self.recordings) > RECORDING_CACHE:
                self.recordings.popitem(last=False)
        found = self.recordings[key]
        if isinstance(found, Reject):
            raise found
        return found

    def _recording_id(self, path: Path) -> str:
        """The audio path relative to the corpus (posix), so ids are stable across machines;
        files outside the corpus keep their absolute path."""
        try:
            relative = PurePath(os.path.relpath(path, os.path.abspath(self.corpus_dir)))
        except ValueError:  # another drive on Windows
            return path.as_posix()
        return path.as_posix() if relative.parts[:1] == ("..",) else relative.as_posix()


def _seconds(name: str, value: str) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise Reject(BAD_TIME, f"{name} {value!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise Reject(BAD_TIME, f"{name} {value!r} is not a non-negative number of seconds")
    return seconds


def _span(start: float | None, end: float | None, total: float) -> tuple[float, float]:
    """(offset, duration) of the segment inside a recording of `total` seconds."""
    offset = start or 0.0
    if end is None:
        end = total
    elif end > total + END_TOLERANCE_S:
        raise Reject(END_BEYOND_DURATION, f"end {end:g} s is beyond the audio's duration {total:g} s")
    end = min(end, total)
    if end <= offset:
        raise Reject(END_BEYOND_DURATION, f"start {offset:g} s is at or past the audio's end {total:g} s")
    return offset, end - offset
