"""Rejected rows: a reason code for counting and a message that names the offending value.

Importers raise `RowError` from deep inside row handling and catch it once per row, so each check
stays a plain function and a row can never be half-accepted.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

# Reason codes (keys of ImportReport.rejects_by_reason).
EMPTY_ID = "empty_id"
UNSAFE_ID = "unsafe_id"  # NUL or other control characters, over-long (osum_data/sources.id_problem)
DUPLICATE_ID = "duplicate_id"
MISSING_AUDIO = "missing_audio"
UNREADABLE_AUDIO = "unreadable_audio"
EMPTY_AUDIO = "empty_audio"
UNKNOWN_LABEL = "unknown_label"
NO_LABEL = "no_label"  # a value the corpus map deliberately leaves without a label, with `drop`
EMPTY_AUDIO = "empty_audio"
LABEL_CONFLICT = "label_conflict"
NO_AUDIO_TRACK = "no_audio_track"
MALFORMED_LINE = "malformed_line"  # a metadata line or file name that does not parse
BAD_TIME = "bad_time"
END_NOT_AFTER_START = "end_not_after_start"
END_BEYOND_DURATION = "end_beyond_duration"
WRONG_FIELD_COUNT = "wrong_field_count"
NO_TRANSCRIPT = "no_transcript"
EMPTY_TEXT = "empty_text"
INVALID_CUT = "invalid_cut"
DROPPED_BY_LHOTSE = "dropped_by_lhotse"


class RowError(Exception):
    """One row cannot become a cut; `code` counts it, the message explains it."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class RejectLog:
    """Collects reject records (dicts written to rejects.jsonl.gz) and counts them by code."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()

    def add(self, code: str, reason: str, **fields: Any) -> None:
        self.records.append({**fields, "reason": reason, "code": code})
        self.counts[code] += 1

    def add_error(self, error: RowError, **fields: Any) -> None:
        self.add(error.code, error.message, **fields)

    def __len__(self) -> int:
        return len(self.records)
