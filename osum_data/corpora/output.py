"""Writing an importer's results: cut manifests, the rejects file and the ImportReport.

All files go through manifest_io.write_jsonl (fixed gzip mtime, atomic rename) so the same corpus
gives byte-identical manifests, which the runner's resume-by-hash relies on.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from lhotse.cut import Cut

from osum_data.corpora.rejects import RejectLog
from osum_data.corpora.report import ImportReport
from osum_data.manifest_io import write_jsonl

CUTS_FILE = "cuts.jsonl.gz"
REJECTS_FILE = "rejects.jsonl.gz"


def part_file(part: str) -> str:
    return f"cuts_{part}.jsonl.gz"


def write_import(
    out_dir: Path,
    corpus: str,
    rows: int,
    parts: dict[str, Iterable[Cut]],
    rejects: RejectLog,
    per_part_files: bool = True,
    expected_labels: Iterable[str] = (),
) -> ImportReport:
    """Write cuts.jsonl.gz (all parts, in the given order), cuts_<part>.jsonl.gz and rejects.

    With `per_part_files=False` each part is iterated once, so a generator streams straight to
    disk (and may still add to `rejects` while it runs: rejects are written last).
    `expected_labels` names the labels this corpus normally provides ("gender", "age"); kept cuts
    lacking them are counted in the report so missing metadata is visible, not silent.
    """
    out_dir = Path(out_dir)
    tally = _Tally(tuple(expected_labels))
    write_jsonl(out_dir / CUTS_FILE, (tally.add(cut) for cuts in parts.values() for cut in cuts))
    if per_part_files:
        for part, cuts in parts.items():
            write_jsonl(out_dir / part_file(part), (cut.to_dict() for cut in cuts))
    write_jsonl(out_dir / REJECTS_FILE, rejects.records)
    return ImportReport(
        rows=rows,
        cuts=tally.cuts,
        rejected=len(rejects),
        rejects_by_reason=dict(sorted(rejects.counts.items())),
        out_dir=out_dir,
        corpus=corpus,
        duration_s=round(tally.duration_s, 3),
        unlabelled={k: n for k, n in tally.unlabelled.items() if n},
    )


class _Tally:
    """Counts cuts, hours and missing labels while they stream past."""

    def __init__(self, fields: tuple[str, ...]):
        self.cuts = 0
        self.duration_s = 0.0
        self.unlabelled = dict.fromkeys(fields, 0)

    def add(self, cut: Cut) -> dict:
        self.cuts += 1
        self.duration_s += cut.duration
        sup = cut.supervisions[0]
        for name in self.unlabelled:
            value = sup.gender if name == "gender" else (sup.custom or {}).get(name)
            if value is None:
                self.unlabelled[name] += 1
        return cut.to_dict()
