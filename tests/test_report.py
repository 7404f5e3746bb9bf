"""`osum-data report`: an HTML page with PNG plots, rendered in headless Chromium (Debian's
`chromium`, installed by scripts/setup.sh), where every image must load."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from osum_data.mix.build import build_mix
from osum_data.mix.config import build_mix_config
from osum_data.report import build_report
from osum_data.run.config import build_config
from osum_data.run.runner import run_pipeline
from tests.conftest import REPO
from tests.mix_fixtures import shared_asr, task_manifest

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory, ray_session):
    """A run (with token counters, augmented cuts, rejects), a mix, side by side in one folder."""
    asr = shared_asr(tmp_path_factory)
    root = tmp_path_factory.mktemp("report")
    ser = task_manifest(asr, "ser", root / "ser.jsonl.gz", n=60, speakers=6, augmented_every=2)
    sgc = task_manifest(asr, "sgc", root / "sgc.jsonl.gz", n=40, speakers=5, augmented_every=3)
    config = build_config(
        {
            "name": "ser-llm",
            "shard_size": 20,
            "imports": ["report_stages"],
            "stages": [
                {"stage": "filter_duration", "max_duration": 4.0},
                {"stage": "count_tokens_for_report"},
            ],
        }
    )
    run_pipeline(config, ser, root / "ser-llm", workers=2, progress=False)
    raw = {
        "audio": "none",
        "tasks": {"ser": {"datasets": [str(ser)]}, "sgc": {"weight": 2, "datasets": [str(sgc)]}},
    }
    build_mix(build_mix_config(raw), root / "mix", progress=False)
    return root


def images_of(page: Path) -> list[str]:
    return re.findall(r"<img src='([^']+)'", page.read_text())


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_report_page_has_every_plot_and_they_load_in_chromium(folder, tmp_path):
    page = build_report(folder)
    assert page == folder / "report" / "index.html"
    images = images_of(page)
    names = {i.rsplit("-", 1)[-1] for i in images}  # <section slug>-<plot>.png
    for plot in (
        "hours_per_task",
        "hours_per_label",
        "durations",
        "label_sources",
        "snr",
        "rejects",
        "llm_tokens",
        "shares",
    ):
        assert f"{plot}.png" in names, (plot, images)
    for img in images:
        assert (page.parent / img).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = page.read_text()
    summary = json.loads((folder / "ser-llm" / "summary.json").read_text())
    tokens = summary["stages"][-1]["counters"]["llm"]
    assert f"{tokens['prompt_tokens']:,}" in html  # the LLM table shows the run's counters

    # Headless Chromium loads the page; a copy with a script records each image's natural width.
    probe = page.parent / "_probe.html"
    probe.write_text(
        html.replace(
            "</body>",
            "<script>window.addEventListener('load', () => document.body.setAttribute('data-widths',"
            " [...document.images].map(i => i.complete ? i.naturalWidth : -1).join(',')));</script></body>",
        )
    )
    proc = chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri(), profile=tmp_path / "p1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    match = re.search(r'data-widths="([^"]*)"', proc.stdout)
    assert match, proc.stdout[:2000]
    widths = [int(w) for w in match.group(1).split(",")]
    assert len(widths) == len(images) and all(w > 0 for w in widths), widths
    shot = tmp_path / "shot.png"
    proc = chromium("--window-size=1200,3000", f"--screenshot={shot}", page.as_uri(), profile=tmp_path / "p2")
    assert proc.returncode == 0 and shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 50_000
    probe.unlink()


def test_broken_image_is_caught_by_the_browser_check(folder, tmp_path):
    """The probe is not vacuous: an image that does not decode has naturalWidth 0."""
    page = build_report(folder / "mix", tmp_path / "r")
    first = images_of(page)[0]
    (page.parent / first).write_bytes(b"not a png")
    probe = page.parent / "_probe.html"
    probe.write_text(
        page.read_text().replace(
            "</body>",
            "<script>window.addEventListener('load', () => document.body.setAttribute('data-widths',"
            " [...document.images].map(i => i.naturalWidth).join(',')));</script></body>",
        )
    )
    proc = chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri(), profile=tmp_path / "p")
    widths = [int(w) for w in re.search(r'data-widths="([^"]*)"', proc.stdout).group(1).split(",")]
    assert widths[0] == 0 and all(w > 0 for w in widths[1:])


def test_report_cli_and_an_empty_folder(folder, tmp_path):
    ok = subprocess.run(
        [sys.executable, "-m", "osum_data.cli", "report", str(folder / "ser-llm")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ok.returncode == 0 and (folder / "ser-llm" / "report" / "index.html").exists(), ok.stderr[-1000:]
    html = (folder / "ser-llm" / "report" / "index.html").read_text()
    assert "snr.png" in html and "llm_tokens.png" in html and "rejects.png" in html
    bad = subprocess.run(
        [sys.executable, "-m", "osum_data.cli", "report", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "not a run, mix or export folder" in bad.stderr
    assert bad.stderr.strip().count("\n") == 0


def test_snr_is_read_where_augmentation_records_it():
    from osum_data.report.stats import snr_of

    assert snr_of({"snr": 7.5}) == 7.5
    assert snr_of({"steps": ["rir", "noise"], "noise": {"cut_id": "n", "snr_db": 13.8}, "seed": 3}) == 13.8
    assert snr_of({"steps": ["rir"], "rir": {"cut_id": "r"}, "seed": 3}) is None  # reverb only: no SNR
    assert snr_of(None) is None
