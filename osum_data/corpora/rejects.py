"""The importers' reject vocabulary and their collector of reject records.

Importers raise `osum_data.rejects.Reject(code, detail)` from deep inside row handling and catch it
once per row, so each check stays a plain function and a row can never be half-accepted. The
records are the one reject shape of the toolkit (a cut dict with `custom.reject`, stage
`prepare:<corpus>`), so a run's, an export's and an import's rejects read alike.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from lhotse.cut import Cut

from osum_data.rejects import Reject, placeholder_record, reject_record

# Reason codes (keys of ImportReport.rejects_by_reason).
EMPTY_ID = "empty_id"
UNSAFE_ID = "unsafe_id"  # NUL or other control characters, over-long (osum_data/sources.id_problem)
DUPLICATE_ID = "duplicate_id"
MISSING_AUDIO = "missing_audio"
UNREADABLE_AUDIO = "unreadable_audio"
EMPTY_AUDIO = "empty_audio"
UNKNOWN_LABEL = "unknown_label"
NO_LABEL = "no_label"  # a value the corpus map deliberately leaves without a label, with `drop`
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


class RejectLog:
    """An import's reject records (written to rejects.jsonl.gz), counted by code."""

    def __init__(self, corpus: str) -> None:
        self.stage = f"prepare:{corpus}"
        self.records: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()

    def row(self, reject: Reject, item_id: str, **fields: Any) -> None:
        """A row (file, table line) that never became a cut: a placeholder cut named `item_id`
        whose custom fields (`source`, `audio`, `row`, ...; None left out) say where it came from."""
        named = {k: v for k, v in fields.items() if v is not None}
        self._add(placeholder_record(item_id, self.stage, reject, **named), reject)

    def cut(self, cut: Cut, reject: Reject) -> None:
        """A cut that was built and then refused."""
        self._add(reject_record(cut.to_dict(), self.stage, reject), reject)

    def _add(self, record: dict[str, Any], reject: Reject) -> None:
        self.records.append(record)
        self.counts[reject.code] += 1

    def __len__(self) -> int:
        return len(self.records)
