"""Checks every importer's output must pass, against what its fixture says it should produce."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from lhotse import CutSet
from lhotse.qa import validate

from osum_data.corpora import PREPARERS, prepare
from osum_data.corpora.report import ImportReport
from osum_data.manifest_io import read_jsonl
from tests.corpus_fixtures import BuiltCorpus

LABELS = ("gender", "age", "emotion", "events")


def run_import(name: str, built: BuiltCorpus, out: Path) -> ImportReport:
    report = prepare(name, built.root, out)
    check_report(report, built)
    check_cuts(out, built)
    check_rejects(out, built, name)
    return report


def check_report(report: ImportReport, built: BuiltCorpus) -> None:
    assert (report.rows, report.cuts, report.rejected) == (built.rows, len(built.cuts), len(built.rejects))
    assert report.rejects_by_reason == dict(Counter(built.rejects.values()))
    assert report.duration_s == pytest.approx(sum(w.duration for w in built.cuts.values()), abs=0.1)


def check_cuts(out: Path, built: BuiltCorpus, duration_tolerance: float = 0.06) -> None:
    cuts = {c.id: c for c in CutSet.from_file(out / "cuts.jsonl.gz")}
    assert set(cuts) == set(built.cuts)
    validate(CutSet.from_cuts(cuts.values()), read_data=True)
    for uid, want in built.cuts.items():
        cut = cuts[uid]
        assert cut.duration == pytest.approx(want.duration, abs=duration_tolerance), uid
        if not cut.supervisions:  # noise / RIR cuts: labels on the cut
            for key, value in want.custom.items():
                got = cut.recording.num_channels if key == "num_channels" else cut.custom.get(key)
                assert got == value, (uid, key)
            continue
        sup = cut.supervisions[0]
        assert sup.id == uid and sup.duration == pytest.approx(cut.duration)
        assert sup.text == (want.text or None), uid
        assert sup.gender == want.gender, uid
        custom = sup.custom or {}
        assert custom.get("subset") == want.subset, uid
        assert custom.get("age") == want.age, uid
        for key, value in want.custom.items():
            assert (sup.language if key == "language" else custom.get(key)) == value, (uid, key)
        for label in ("emotion", "events"):
            if label not in want.custom:
                assert label not in custom, (uid, label)
        present = {k for k in LABELS if (sup.gender if k == "gender" else custom.get(k)) is not None}
        assert custom.get("label_source", {}) == dict.fromkeys(present, "corpus"), uid


def import_rejects(out: Path, corpus: str | None = None) -> list[dict]:
    """An import's rejects.jsonl.gz, each record flattened to {id, <custom fields naming the row>,
    stage, code, reason}, after checking the one record shape: cut dicts lhotse loads, with
    `custom.reject` from stage `prepare:<corpus>`."""
    path = out / "rejects.jsonl.gz"
    records = list(read_jsonl(path))
    if records:  # placeholders are cuts too (lhotse reads an empty manifest as None)
        assert len(CutSet.from_file(path)) == len(records)
    flat = []
    for r in records:
        custom = dict(r["custom"])
        info = custom.pop("reject")
        assert info["stage"].startswith("prepare:") and info["code"] and info["reason"], r
        if corpus is not None:
            assert info["stage"] == f"prepare:{corpus}", r
        flat.append({"id": r["id"], **custom, **info})
    return flat


def check_rejects(out: Path, built: BuiltCorpus, corpus: str | None = None) -> None:
    rejects = import_rejects(out, corpus)
    assert {r["id"]: r["code"] for r in rejects} == built.rejects
    for r in rejects:
        assert r["reason"] and r["source"], r


def check_repeatable(name: str, built: BuiltCorpus, out: Path) -> None:
    """Importing the same corpus again into the same OUT_DIR gives byte-identical manifests (demuxed
    audio lives under OUT_DIR, so its paths are only the same there)."""
    before = {p.name: p.read_bytes() for p in out.glob("*.jsonl.gz")}
    PREPARERS[name](built.root, out)
    assert {p.name: p.read_bytes() for p in out.glob("*.jsonl.gz")} == before
