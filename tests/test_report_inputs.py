"""`osum-data report` on summaries it cannot use: a corrupt, empty, list or wrongly shaped summary.json
is one line naming the file (exit 2), never skipped silently and never an "unexpected" crash; an
`--out` that is a file is one line too. No Ray: the folders are written by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from osum_data.cli import main

RUN = {
    "pipeline": "asr",
    "in": 1,
    "out": 1,
    "rejected": 0,
    "derived": 0,
    "accounting": "in 1 = out 1 - derived 0 + rejected 0",
    "rejected_by_reason": {},
    "stages": [{"stage": "input", "in": 1, "out": 1}],
}
MIX = {
    "type": "mix",
    "name": "m",
    "unit": "cuts",
    "in": 1,
    "out": 1,
    "rejected_by_reason": {},
    "tasks": {
        "asr": {
            "target_share": 1.0,
            "realised_share": 1.0,
            "train_cuts": 1,
            "dev_cuts": 0,
            "test_cuts": 0,
            "speaker_disjoint": False,
            "note": "1 speaker",
        }
    },
}


def folder(root: Path, summary: str, inner_run: bool = True) -> Path:
    """A mix-like folder whose own summary.json holds `summary`, with a valid run inside (as a mix has)."""
    root.mkdir(parents=True)
    (root / "summary.json").write_text(summary, encoding="utf-8")
    if inner_run:
        (root / "run").mkdir()
        (root / "run" / "summary.json").write_text(json.dumps(RUN), encoding="utf-8")
    return root


def report(capsys, *argv: str) -> tuple[int, str]:
    code = main(["report", *argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("summary", "message"),
    [
        ("{broken", "not valid JSON (Expecting property name enclosed in double quotes, line 1)"),
        ("", "is empty"),
        ("[1, 2]", "holds a JSON list, not the summary of a run, mix or export"),
        ('{"type": "mix", "tasks": "x", "in": "a"}', "mix summary with a bad 'tasks'"),
        (json.dumps({**RUN, "stages": "x"}), "run summary with a bad 'stages'"),
        ('{"a": 1}', "not the summary of a run, mix or export"),
    ],
)
def test_an_unusable_summary_is_one_line_naming_it(tmp_path, capsys, summary, message):
    root = folder(tmp_path / "r", summary)
    code, err = report(capsys, str(root))
    assert code == 2 and err.count("\n") == 1, err
    assert f"{root / 'summary.json'}" in err and message in err and "unexpected" not in err
    assert not (root / "report").exists()


def test_a_corrupt_summary_below_the_folder_is_not_skipped(tmp_path, capsys):
    root = tmp_path / "all"
    folder(root / "good", json.dumps(MIX), inner_run=False)
    folder(root / "bad", "{broken", inner_run=False)
    code, err = report(capsys, str(root))
    assert code == 2 and f"{root / 'bad' / 'summary.json'}: not valid JSON" in err


def test_valid_summaries_still_report_and_out_must_be_a_folder(tmp_path, capsys):
    root = folder(tmp_path / "r", json.dumps(MIX))
    assert report(capsys, str(root), "--out", str(tmp_path / "page"))[0] == 0
    page = (tmp_path / "page" / "index.html").read_text()
    assert "Mix &#x27;m&#x27;" in page and "1 speaker" in page and "Pipeline run" not in page
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    code, err = report(capsys, str(root), "--out", str(afile))
    assert code == 2 and f"--out {afile} is a file; give a folder" in err and err.count("\n") == 1
    assert afile.read_text() == "keep me"
