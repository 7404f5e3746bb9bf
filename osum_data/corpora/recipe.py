"""Shared driver for importers that wrap a lhotse recipe.

lhotse's recipes skip some utterances with only a log line (missing audio, audio without a
transcript) and never tell the caller. So each importer first lists what the corpus *should*
yield (`Expected` entries, from its own scan of transcripts and audio), then runs the recipe, and
`assemble` reconciles the two: every expected utterance ends up as exactly one cut or one reject
with a reason, and the ImportReport invariant rows == cuts + rejected holds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lhotse import CutSet, RecordingSet, SupervisionSegment, SupervisionSet
from lhotse.cut import Cut
from lhotse.utils import fastcopy

from osum_data.corpora.output import write_import
from osum_data.corpora.rejects import DROPPED_BY_LHOTSE, DUPLICATE_ID, EMPTY_TEXT, MISSING_AUDIO, RejectLog
from osum_data.corpora.report import ImportReport
from osum_data.errors import OsumError
from osum_data.rejects import Reject

Manifests = Mapping[str, Mapping[str, Any]]  # part -> {"recordings": ..., "supervisions": ...}
Relabel = Callable[[SupervisionSegment, str], SupervisionSegment]


@dataclass(frozen=True)
class Expected:
    """One utterance the corpus files promise (a transcript line, an audio file, a tsv row)."""

    id: str
    subset: str | None
    audio: Path | None
    source: str  # where a user finds it, e.g. "dev-clean/84/121123/84-121123.trans.txt:3"
    problem: Reject | None = None  # known before running lhotse (e.g. audio without transcript)
    # False for a row that is rejected on its own without owning the id (a superseded duplicate
    # transcript line): the utterance itself may still become a cut.
    claims_id: bool = True


class RecipeError(OsumError):
    """A lhotse recipe crashed on the corpus (exit 1: the data, not the command, is at fault)."""


def run_recipe(name: str, fn: Callable[..., Any], corpus_dir: Path, **kwargs: Any) -> Any:
    """Call a lhotse recipe; its crash (e.g. a corrupt audio file) is re-raised naming the corpus."""
    try:
        return fn(corpus_dir, **kwargs)
    except Exception as exc:
        raise RecipeError(f"lhotse's {name} failed on {corpus_dir}: {type(exc).__name__}: {exc}") from exc


def assemble(
    corpus: str,
    out_dir: Path,
    expected: list[Expected],
    manifests: Manifests,
    relabel: Relabel,
    expected_labels: tuple[str, ...],
) -> ImportReport:
    """Reconcile the recipe's output with `expected`, relabel, and write all manifests.

    `relabel(sup, part)` adds corpus metadata (gender, language, ...) or raises Reject to reject.
    Parts are written in the order of `manifests`; cuts within a part are sorted by id, because
    lhotse's order depends on directory listing and thread timing.
    """
    rejects = RejectLog(corpus)
    pending: dict[str, Expected] = {}
    settled: set[str] = set()  # ids already counted as a row (rejected up front or produced)
    rows = 0
    for entry in expected:
        rows += 1
        if entry.problem is not None or entry.id in pending or entry.id in settled:  # reject now
            error = entry.problem or Reject(DUPLICATE_ID, f"duplicate utterance id {entry.id!r}")
            _reject(rejects, error, entry.id, entry.subset, entry.audio, entry.source)
            if entry.claims_id:
                settled.add(entry.id)
        else:
            pending[entry.id] = entry

    parts: dict[str, list[Cut]] = {}
    for part, manifest in manifests.items():
        kept = []
        for sup in sorted(manifest["supervisions"], key=lambda s: s.id):
            entry = pending.pop(sup.id, None)
            if entry is None:
                if sup.id in settled:
                    continue  # already rejected above (or a duplicate of a produced id)
                rows += 1  # lhotse found an utterance our scan did not: still one row
            settled.add(sup.id)
            try:
                if not (sup.text or "").strip():
                    raise Reject(EMPTY_TEXT, f"empty transcript for {sup.id!r}")
                kept.append(relabel(fastcopy(sup, custom={**(sup.custom or {}), "subset": part}), part))
            except Reject as err:
                if entry is None:
                    _reject(rejects, err, sup.id, part, None, part)
                else:
                    _reject(rejects, err, sup.id, entry.subset, entry.audio, entry.source)
        parts[part] = _cuts(manifest["recordings"], kept)

    for entry in pending.values():  # promised by the corpus files, silently skipped by lhotse
        if entry.audio is not None and not entry.audio.is_file():
            error = Reject(MISSING_AUDIO, f"audio file {str(entry.audio)!r} does not exist")
        else:
            error = Reject(DROPPED_BY_LHOTSE, f"lhotse's recipe produced no utterance {entry.id!r}")
        _reject(rejects, error, entry.id, entry.subset, entry.audio, entry.source)
    return write_import(out_dir, corpus, parts.items(), rejects, rows, expected_labels=expected_labels)


def _cuts(recordings: RecordingSet, supervisions: list[SupervisionSegment]) -> list[Cut]:
    """One cut per supervision, cut id = utterance id.

    CutSet.from_manifests alone names cuts "<recording id>-<index in the RecordingSet>", which
    changes whenever the file listing order does; trimming to the supervision renames each cut to
    its supervision id.
    """
    if not supervisions:
        return []
    cuts = CutSet.from_manifests(
        recordings=recordings, supervisions=SupervisionSet.from_segments(supervisions)
    ).trim_to_supervisions(keep_overlapping=False)
    out = sorted(cuts, key=lambda c: c.id)
    if len(out) != len(supervisions):
        raise AssertionError(f"{len(supervisions)} supervisions became {len(out)} cuts")
    return out


def _reject(
    rejects: RejectLog, error: Reject, uid: str, subset: str | None, audio: Path | None, source: str
) -> None:
    rejects.row(error, uid, subset=subset, audio=str(audio) if audio else None, source=source)
