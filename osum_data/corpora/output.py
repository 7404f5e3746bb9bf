"""Writing an importer's results: cut manifests, the rejects file and the ImportReport.

All files go through manifest_io.write_jsonl (fixed gzip mtime, atomic rename) so the same corpus
gives byte-identical manifests, which the runner's resume-by-hash relies on.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from lhotse.cut import Cut

from osum_data.corpora.rejects import UNSAFE_ID, RejectLog
from osum_data.corpora.report import ImportReport
from osum_data.manifest_io import atomic_path, write_jsonl
from osum_data.rejects import Reject
from osum_data.sources import id_problem

CUTS_FILE = "cuts.jsonl.gz"
REJECTS_FILE = "rejects.jsonl.gz"


def part_file(part: str) -> str:
    return f"cuts_{part}.jsonl.gz"


def write_import(
    out_dir: Path,
    corpus: str,
    parts: Iterable[tuple[str | None, Iterable[Cut]]],
    rejects: RejectLog,
    rows: int | Callable[[], int],
    expected_labels: Iterable[str] = (),
) -> ImportReport:
    """Stream each part's cuts to disk as they are built; memory stays flat however large the corpus.

    `parts` yields (part name, cuts) in order; a named part goes to cuts_<part>.jsonl.gz and
    cuts.jsonl.gz is then their byte concatenation (a multi-member gzip stream is one valid gzip
    file, as the runner's merge relies on too). A single part named None is written straight to
    cuts.jsonl.gz. Builders may add to `rejects` while their cuts stream (rejects are written last)
    and count rows as they go: a callable `rows` is read after all parts are consumed.
    `expected_labels` names the labels this corpus normally provides ("gender", "age"); kept cuts
    lacking them are counted in the report so missing metadata is visible, not silent.
    """
    out_dir = Path(out_dir)
    tally = _Tally(tuple(expected_labels))
    written: list[str] = []
    for part, cuts in parts:
        name = CUTS_FILE if part is None else part_file(part)
        if name in written or (part is None and written) or CUTS_FILE in written:
            raise ValueError(f"{corpus}: part {part!r} written twice or mixed with an unnamed part")
        write_jsonl(out_dir / name, (tally.add(cut) for cut in _safe(cuts, rejects)))
        written.append(name)
    if CUTS_FILE not in written:
        with atomic_path(out_dir / CUTS_FILE) as tmp, open(tmp, "wb") as combined:
            for name in written:
                with open(out_dir / name, "rb") as f:
                    shutil.copyfileobj(f, combined)
    write_jsonl(out_dir / REJECTS_FILE, rejects.records)
    return ImportReport(
        rows=rows() if callable(rows) else rows,
        cuts=tally.cuts,
        rejected=len(rejects),
        rejects_by_reason=dict(sorted(rejects.counts.items())),
        out_dir=out_dir,
        corpus=corpus,
        duration_s=round(tally.duration_s, 3),
        unlabelled={k: n for k, n in tally.unlabelled.items() if n},
    )


def _safe(cuts: Iterable[Cut], rejects: RejectLog) -> Iterable[Cut]:
    """The cuts whose ids are safe to use (osum_data/sources.py: no NUL or other control
    characters, not empty, not over-long), every importer alike; the rest become `unsafe_id`
    rejects. An id names files, tar members and list lines downstream."""
    for cut in cuts:
        why = id_problem(cut.id)
        if why is None:
            yield cut
        else:
            rejects.cut(cut, Reject(UNSAFE_ID, why))


class _Tally:
    """Counts cuts, hours and missing labels while they stream past."""

    def __init__(self, fields: tuple[str, ...]):
        self.cuts = 0
        self.duration_s = 0.0
        self.unlabelled = dict.fromkeys(fields, 0)

    def add(self, cut: Cut) -> dict:
        self.cuts += 1
        self.duration_s += cut.duration
        if not cut.supervisions:  # noise / RIR recordings carry no labels
            return cut.to_dict()
        sup = cut.supervisions[0]
        for name in self.unlabelled:
            value = sup.gender if name == "gender" else (sup.custom or {}).get(name)
            if value is None:
                self.unlabelled[name] += 1
        return cut.to_dict()
