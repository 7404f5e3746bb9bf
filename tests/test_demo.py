"""The demo end to end through the CLI, as `make demo` runs it: real speech, local Ray, export."""

from __future__ import annotations

import html
import json
import os
import subprocess
import sys
import time
from collections import Counter

import pytest
import soundfile as sf
from lhotse import CutSet
from lhotse.qa import validate

from osum_data.export import read_data_list, read_shards
from osum_data.manifest_io import read_jsonl
from osum_data.tasks import parse_target, prompt_pool
from tests.conftest import REPO

# The module's demo fixture runs the whole plan (~4-6 min on a quiet 2-core machine); a loaded CI
# machine can take twice that, which the suite's 600 s default would cut off.
pytestmark = pytest.mark.timeout(1800)


def _run_demo(out, cache):
    """`osum-data demo --limit 120` into `out`, with its own LLM cache (so its requests can be counted)."""
    cmd = [
        sys.executable,
        "-m",
        "osum_data.cli",
        "demo",
        "--output",
        str(out),
        "--limit",
        "120",
        "--no-progress",
    ]
    env = {**os.environ, "OSUM_CACHE": str(cache)}
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1500, env=env)
    proc.elapsed = time.monotonic() - started
    return proc


def _llm_cache_entries(cache) -> int:
    return sum(1 for p in (cache / "llm").rglob("*") if p.is_file()) if (cache / "llm").is_dir() else 0


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One `osum-data demo --limit 120` for the tests below (it runs every pipeline of demo.yaml)."""
    root = tmp_path_factory.mktemp("demo")
    out = root / "demo"
    proc = _run_demo(out, root / "cache")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


def test_demo_builds_validated_asr_samples_and_an_osum_export(demo):
    out, proc = demo
    assert "rejected by reason" in proc.stdout

    imported = list(read_jsonl(out / "import" / "cuts.jsonl.gz"))
    assert len(imported) == 120
    summary = json.loads((out / "asr" / "summary.json").read_text())
    assert summary["in"] == 120 == summary["out"] + summary["rejected"]
    assert summary["out"] >= 100  # the prompts are real speech; only a few are tones or silence
    assert summary["rejected_by_reason"]  # ... and those few are rejected with a reason

    srwt = json.loads((out / "srwt" / "summary.json").read_text())
    assert srwt["in"] == 120 == srwt["out"] + srwt["rejected"] and srwt["out"] >= 80
    for cut in CutSet.from_file(out / "srwt" / "cuts.jsonl.gz"):
        words = parse_target(cut.custom["task"], cut.custom["target"]).words
        assert [w.text for w in words] == [a.symbol for a in cut.supervisions[0].alignment["word"]]
    longform = json.loads((out / "longform" / "summary.json").read_text())
    assert longform["in"] == 1 and longform["out"] >= 3  # one long recording -> segments
    assert all(
        c.custom["source_cut_id"] == "long_000" for c in CutSet.from_file(out / "longform" / "cuts.jsonl.gz")
    )
    assert summary["hours_by_task"]["<TRANSCRIBE>"] > 0

    cuts = CutSet.from_file(out / "asr" / "cuts.jsonl.gz")
    validate(cuts, read_data=True)  # lhotse's own manifest validation, decoding the audio
    validate(CutSet.from_file(out / "import" / "cuts.jsonl.gz"), read_data=False)
    pool = set(prompt_pool("en")["<TRANSCRIBE>"])
    for cut in cuts:
        assert cut.sampling_rate == 16000
        assert cut.custom["task"] == "<TRANSCRIBE>"
        assert cut.custom["instruction"] in pool
        assert parse_target("<TRANSCRIBE>", cut.custom["target"]).transcript == cut.supervisions[0].text
        assert "<" not in cut.supervisions[0].text and ">" not in cut.supervisions[0].text

    rejects = CutSet.from_file(out / "asr" / "rejects.jsonl.gz")  # rejects load as cuts too
    assert len(rejects) == summary["rejected"] and all(c.custom["reject"]["reason"] for c in rejects)
    rejected_ids = {c.id for c in rejects}
    assert rejected_ids | {c.id for c in cuts} == {d["id"] for d in imported}

    raw = {s.key: s for s in read_data_list(out / "asr" / "osum" / "data.list")}
    sharded = {s.key: s for s in read_shards(out / "asr" / "osum" / "shards_list.txt")}
    assert set(raw) == set(sharded) == {c.id for c in cuts}
    for cut in cuts:
        s = raw[cut.id]
        assert s.txt == cut.custom["target"] and s.task == "<TRANSCRIBE>" and s.gender == "female"
        assert s.sampling_rate == 16000 and abs(s.duration - cut.duration) < 1e-3


def test_demo_runs_ved_ser_sgc_sap_and_leaves_one_example_of_each(demo):
    out, proc = demo
    expected_keys = {
        "ved": {"<CAPTION>", "<TRANSCRIBE> <CAPTION>"},
        "ser": {"<EMOTION>", "<TRANSCRIBE> <EMOTION>"},
        "sgc": {"<TRANSCRIBE> <GENDER>", "<TRANSCRIBE> <AGE> <GENDER>", "<AGE> <GENDER>"},
        "sap": {"<TRANSCRIBE> <AGE> <GENDER>", "<AGE> <GENDER>"},
    }
    for run, keys in expected_keys.items():
        summary = json.loads((out / run / "summary.json").read_text())
        assert summary["in"] == summary["out"] - summary["derived"] + summary["rejected"]
        cuts = CutSet.from_file(out / run / "cuts.jsonl.gz")
        tasks = Counter(c.custom["task"] for c in cuts)
        assert keys <= set(tasks), (run, tasks)
        for cut in cuts:
            parse_target(cut.custom["task"], cut.custom["target"])
        example = out / "examples" / f"{run}.wav"
        audio, sr = sf.read(example)
        assert sr == 16000 and audio.size > sr and f"[{run}] listen: {example}" in proc.stdout
        text = (out / "examples" / f"{run}.txt").read_text()
        assert "target: " in text and "instruction: " in text
    assert "composite: " in (out / "examples" / "ved.txt").read_text()
    assert "augment: " in (out / "examples" / "sgc.txt").read_text()
    sgc = json.loads((out / "sgc" / "summary.json").read_text())
    augment = next(st for st in sgc["stages"] if st["stage"] == "augment")
    assert augment["derived"] == augment["in"] > 0 and augment["out"] == 2 * augment["in"]  # doubled
    # Real laughs and coughs became X-only samples; each speech prompt was joined with one of them.
    ved = CutSet.from_file(out / "ved" / "cuts.jsonl.gz")
    assert {c.custom["target"] for c in ved if c.custom["task"] == "<CAPTION>"} == {"<LAUGH>", "<COUGH>"}


def test_demo_mixes_every_run_exports_reports_and_trains(demo):
    out, proc = demo
    mix = json.loads((out / "mix" / "summary.json").read_text())
    assert {"asr", "srwt", "ved", "ser", "sgc", "sap_sgc"} <= set(mix["tasks"]), mix["tasks"].keys()
    for task, t in mix["tasks"].items():
        assert abs(t["realised_share"] - t["target_share"]) < 0.02, (task, t)
    assert mix["rejected"] == 0 and mix["out"] == sum(mix["cuts_by_task"].values())
    shar = CutSet.from_shar(in_dir=out / "mix" / "train")
    assert sum(1 for c in shar if c.load_audio().shape == (1, c.num_samples)) == mix["out"]
    planned = sum(1 for _ in read_jsonl(out / "mix" / "plan" / "mix.jsonl.gz"))
    for fmt in ("osum", "nemo", "hf", "sharegpt"):
        exported = json.loads((out / "export" / fmt / "summary.json").read_text())
        assert exported["rejected"] == 0 and exported["exported"] > 0, fmt
        if fmt != "osum":  # osum writes each unique cut once, with the weights in data_config.yaml
            assert exported["exported"] == planned, fmt
    assert (out / "export" / "osum" / "data_config.yaml").exists()
    log = [json.loads(x) for x in (out / "train" / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 3 and all(0 < x < 100 for x in losses)
    page = html.unescape((out / "report" / "index.html").read_text())
    assert page.count("<img ") >= 8 and "Mix 'demo'" in page
    assert "Where to look:" in proc.stdout and str(out / "report" / "index.html") in proc.stdout


def test_the_demo_ends_with_a_table_of_all_eight_tasks(demo):
    """Issue 15 item 4: "Done" means every planned task arrived; the table says so per task."""
    out, proc = demo
    table = json.loads((out / "tasks.json").read_text())
    rows = {r["task"]: r for r in table["tasks"]}
    assert {"asr", "srwt", "ved", "ser", "ssr", "sgc", "sap", "sttc"} <= set(rows), rows.keys()
    assert table["complete"] and all(r["status"] == "ok" and r["samples"] > 0 for r in rows.values())
    assert "all 9 tasks arrived" in proc.stdout.splitlines()[-1]
    page = (out / "report" / "index.html").read_text()
    assert page.index("Tasks of the plan") < page.index("<section id='s0'>")
    assert "All 9 planned tasks arrived." in page


def test_the_demo_measures_quality_and_its_noisy_copies_score_lower(demo):
    """Issue 17 item 5: the quality run labels the SGC samples (keep_measures_only: nothing
    rejected), the noisy/reverberant copies score lower SNR than their sources, the run is no
    dataset of the mix nor counted again in the task table, and the demo closes with its measures
    (terminal and report)."""
    out, proc = demo
    summary = json.loads((out / "quality" / "summary.json").read_text())
    sgc = json.loads((out / "sgc" / "summary.json").read_text())
    assert summary["in"] == summary["out"] == sgc["out"] and summary["rejected"] == 0
    rows = json.loads((out / "tasks.json").read_text())["quality"]["quality"]
    assert {"snr_db", "clipping", "bandwidth_hz", "speech_ratio", "lang_match", "max_run"} <= set(rows)
    snr = rows["snr_db"]
    assert snr["pairs"] * 2 == snr["n"] == sgc["out"]  # every copy paired with its source
    assert snr["copies_mean"] < snr["sources_mean"] - 10 and snr["copy_lower"] >= 0.9 * snr["pairs"]
    mix = json.loads((out / "mix" / "summary.json").read_text())
    assert not any("quality" in t["datasets"] for t in mix["tasks"].values())
    table = json.loads((out / "tasks.json").read_text())
    assert all("quality" not in r["runs"] for r in table["tasks"])
    assert not (out / "quality" / "osum").exists()
    closing = proc.stdout.split("\nTasks:\n", 1)[1]
    assert "Quality of run 'quality'" in closing and "snr_db" in closing
    page = (out / "report" / "index.html").read_text()
    assert "Sources vs their augmented (noise/reverb) copies" in page and "quality snr_db" in page


def test_a_second_demo_run_reuses_what_is_unchanged_and_exits_0(demo):
    """Issue 15 item 5 (runs last: it re-runs the demo into the fixture's folder). Before, the
    second run stopped at the training step (FileExistsError: pass --resume), exit 1."""
    out, first = demo
    cache = out.parent / "cache"
    entries = _llm_cache_entries(cache)
    assert entries > 0  # the first run asked the embedded LLM
    proc = _run_demo(out, cache)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for run in ("asr", "ved", "ser", "sgc", "sap", "srwt", "longform", "quality", "ssr", "sttc", "persona"):
        assert f"[{run}] unchanged since its last run" in proc.stdout, run
    assert _llm_cache_entries(cache) == entries  # no new LLM request
    assert "embedded local server" not in proc.stderr  # not even started
    assert "was trained on this mix with this config: resuming" in proc.stdout
    assert "all 9 tasks arrived" in proc.stdout.splitlines()[-1]
    assert proc.elapsed < 0.75 * first.elapsed, (first.elapsed, proc.elapsed)
