"""One reject model for every step (importers, stages, exports, the mix, the trainer's filter).

A step raises `Reject(code, detail)` for one item; whoever catches it writes one record shape:
the item as a Lhotse cut dict (or, for an input line or row that never became a cut, a minimal
placeholder cut naming it) with `custom.reject = {stage, code, reason[, transient]}`. The rejects
manifest therefore stays loadable by lhotse, and `code` is always a field, never parsed back out
of a message.
"""

from __future__ import annotations

import copy
from typing import Any

from osum_data.errors import OsumError


class Reject(Exception):
    """One item cannot go on. `code` groups reasons in summaries (short, stable, e.g.
    'missing_file'); `detail` is the human-readable reason kept in the rejects file; `transient`
    marks a reject a later run should retry (an unreachable endpoint): nothing was decided."""

    def __init__(self, code: str, detail: str = "", transient: bool = False):
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail or code
        self.transient = transient


class FatalStageError(OsumError):
    """No item can succeed however often it is tried (an LLM endpoint that refuses the key, or is
    down): raised inside a stage, it stops the run with its one-line message instead of rejecting
    every item, and the shard is not finished, so the re-run does it."""


def reject_info(stage: str, reject: Reject) -> dict[str, Any]:
    """The `custom.reject` entry for `reject` raised by `stage`."""
    info: dict[str, Any] = {"stage": stage, "reason": reject.detail, "code": reject.code}
    if reject.transient:
        info["transient"] = True
    return info


def reject_record(cut_dict: dict[str, Any], stage: str, reject: Reject) -> dict[str, Any]:
    """A copy of the cut dict marked as rejected by `stage` (the one record shape)."""
    rec = copy.deepcopy(cut_dict)
    custom = rec.get("custom")
    rec["custom"] = dict(custom) if isinstance(custom, dict) else {}
    rec["custom"]["reject"] = reject_info(stage, reject)
    return rec


def placeholder_record(item_id: str, stage: str, reject: Reject, **custom: Any) -> dict[str, Any]:
    """A reject record for an input that never became a cut (a line that does not parse, a
    corpus row without audio): a zero-length cut whose id and `custom` fields name the input."""
    return {
        "id": item_id,
        "start": 0.0,
        "duration": 0.0,
        "channel": 0,
        "supervisions": [],
        "custom": {**custom, "reject": reject_info(stage, reject)},
        "type": "MonoCut",
    }


def record_code(record: dict[str, Any]) -> str:
    """The reject code of a record (records from before codes were fields: 'unknown')."""
    info = (record.get("custom") or {}).get("reject") or {}
    return str(info.get("code") or "unknown")
