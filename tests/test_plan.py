"""Plans (`osum-data run-all`, `osum-data demo`): the bundled plans load and validate; a plan's mix
picks up every run as a dataset of its task."""

from __future__ import annotations

import json
import re

import pytest

from osum_data.manifest_io import read_jsonl
from osum_data.mix.config import build_mix_config
from osum_data.plan import expand_paths, load_plan, mix_config_of
from osum_data.yaml_config import ConfigError
from tests.conftest import REPO

KEYS = {  # the task keys each bundled run writes (as its summary.json's cuts_by_task would list them)
    "asr": ["<TRANSCRIBE>"],
    "srwt": ["<TRANSCRIBE> <ALIGN>"],
    "longform": ["<TRANSCRIBE>"],
    "ved": ["<CAPTION>", "<TRANSCRIBE> <CAPTION>"],
    "ser": ["<EMOTION>", "<TRANSCRIBE> <EMOTION>"],
    "sgc": ["<TRANSCRIBE> <GENDER>", "<TRANSCRIBE> <AGE> <GENDER>"],
    "sap": ["<TRANSCRIBE> <AGE> <GENDER>", "<AGE> <GENDER>"],
    "ssr": ["<TRANSCRIBE> <STYLE>", "<STYLE>"],
    "sttc": ["<TRANSCRIBE> <S2TCHAT>", "<S2TCHAT>"],
    "persona": ["untemplated"],  # persona speech is an input for other runs, not task samples
    "quality": ["<TRANSCRIBE> <GENDER>", "<AGE> <GENDER>"],  # labels the sgc run's samples (#17)
}


@pytest.mark.parametrize("name", ["all.yaml", "demo.yaml"])
def test_bundled_plans_load_and_their_mix_validates(name, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    plan = load_plan(REPO / "pipelines" / name, check_paths=name == "demo.yaml")  # all.yaml: /data/...
    for run in plan.runs:  # every run's pipeline exists (load_plan checks it)
        (tmp_path / run.name).mkdir()
        counts = dict.fromkeys(KEYS[run.name], 3)
        (tmp_path / run.name / "summary.json").write_text(json.dumps({"cuts_by_task": counts}))
    runs = [r.name for r in plan.runs if r.makes_samples()]
    assert name != "demo.yaml" or "quality" not in runs  # a labelling run is no dataset of the mix
    cfg = build_mix_config(mix_config_of(plan.mix, runs, tmp_path))
    assert set(cfg.tasks) == {"asr", "srwt", "ved", "ser", "sgc", "sap_sgc", "ssr", "sttc"}
    assert [d.name for d in cfg.tasks["sap_sgc"].datasets] == ["sgc-sap_sgc", "sap"]
    assert [d.name for d in cfg.tasks["sgc"].datasets] == ["sgc-sgc"]
    assert cfg.tasks["asr"].datasets[0].manifest == str(tmp_path / "asr" / "cuts.jsonl.gz")


def test_plan_errors_are_one_line(tmp_path):
    bad = tmp_path / "plan.yaml"
    bad.write_text("runs:\n  - {name: a, pipeline: pipelines/nope.yaml}\n")
    with pytest.raises(ConfigError, match="run 'a': pipeline file not found"):
        load_plan(bad)
    bad.write_text("runs: []\nmixx: {}\n")
    with pytest.raises(ConfigError, match="unknown key.*mixx"):
        load_plan(bad)
    with pytest.raises(ConfigError, match=r"names no input or earlier run"):
        expand_paths("augment.noise=${noise}", {"asr": tmp_path})
    assert expand_paths("augment.noise=${asr}", {"asr": tmp_path}) == f"augment.noise={tmp_path}"


def test_a_run_with_samples_of_two_tasks_feeds_both(tmp_path):
    (tmp_path / "both").mkdir()
    (tmp_path / "both" / "summary.json").write_text(
        json.dumps({"cuts_by_task": {"<TRANSCRIBE> <AGE>": 3, "<TRANSCRIBE> <AGE> <GENDER>": 2, "<AGE>": 1}})
    )
    mix = mix_config_of({}, ["both"], tmp_path)
    assert {t: [d["name"] for d in e["datasets"]] for t, e in mix["tasks"].items()} == {
        "sap": ["both-sap"],
        "sap_sgc": ["both-sap_sgc"],
    }
    build_mix_config(mix)  # a valid MIX config


ASR = f"{REPO}/pipelines/asr.yaml"
INPUT_A = "inputs: {a: {manifest: MANIFEST}}\n"
PLAN_ERRORS = {  # plan text (MANIFEST: an existing file) -> the one-line error (regex)
    "run_typo": (
        "inputs: {a: {manifest: MANIFEST}, b: {manifest: MANIFEST}}\n"
        f"runs: [{{name: asr, pipeline: {ASR}, inptu: b, sett: [shard_size=1]}}]\n",
        r"plan.yaml: run 'asr': unknown key 'inptu'; known keys: name, pipeline, input, set, export, samples "
        r"\(and 1 more\)$",
    ),
    "input_typo": (
        f"inputs: {{a: {{manifest: MANIFEST, corpus_dri: /x}}}}\nruns: [{{name: asr, pipeline: {ASR}}}]\n",
        r"plan.yaml: input 'a': unknown key 'corpus_dri'; known keys: builder, manifest, prepare, "
        r"corpus_dir$",
    ),
    "late_input": (
        INPUT_A + f"runs:\n  - {{name: asr, pipeline: {ASR}, input: a}}\n"
        f"  - {{name: ser, pipeline: {ASR}, input: nosuchinput}}\n",
        r"plan.yaml: run 'ser': input 'nosuchinput' is neither an input nor an earlier run "
        r"\(those are: a, asr\)",
    ),
    "self_reference": (
        INPUT_A + f"runs: [{{name: b, pipeline: {ASR}, input: b}}]\n",
        r"run 'b': input 'b' is neither",
    ),
    "late_set": (
        INPUT_A + f"runs:\n  - {{name: asr, pipeline: {ASR}}}\n"
        f"  - {{name: asr2, pipeline: {ASR}, set: [audio_policy.bogus=1]}}\n",
        r"plan.yaml: run 'asr2': .*asr.yaml: stage 'audio_policy': unknown parameter 'bogus'",
    ),
    "set_type": (
        INPUT_A + f"runs: [{{name: asr, pipeline: {ASR}, set: [shard_size=abc]}}]\n",
        r"run 'asr': .*shard_size='abc'",
    ),
    "set_not_a_list": (
        INPUT_A + f"runs: [{{name: asr, pipeline: {ASR}, set: shard_size=1}}]\n",
        r"run 'asr': set='shard_size=1': Input should be a valid list",
    ),
    "set_unknown_name": (
        "inputs: {a: {manifest: MANIFEST}}\nruns: [{name: sgc, pipeline: "
        f"{REPO}/pipelines/sgc.yaml, set: ['augment.noise=${{musan}}']}}]\n",
        r"run 'sgc': set: 'augment.noise=\$\{musan\}' names no input or earlier run",
    ),
    "late_mix": (
        INPUT_A + f"runs: [{{name: asr, pipeline: {ASR}}}]\nmix: {{temperature: -1}}\n",
        r"plan.yaml: mix: temperature=-1: Input should be greater than 0",
    ),
    "mix_unknown_run": (
        INPUT_A + f"runs: [{{name: asr, pipeline: {ASR}}}]\n"
        "mix: {tasks: {asr: {datasets: [{run: asrr}]}}}\n",
        r"mix: tasks.asr.datasets.0.run: no run named 'asrr' \(runs: asr\)",
    ),
    "export_format": (
        INPUT_A + f"runs: [{{name: asr, pipeline: {ASR}}}]\nexport: {{wenet: {{shards: true}}}}\n",
        r"plan.yaml: export: unknown format 'wenet' \(formats: osum, nemo, hf, sharegpt\)",
    ),
    "export_option": (
        INPUT_A + f"runs: [{{name: asr, pipeline: {ASR}}}]\nexport: {{osum: {{shard: true}}}}\n",
        r"plan.yaml: unknown key 'export.osum.shard'; known keys: shards, shard_size, relative$",
    ),
    "mix_export_format": (
        INPUT_A + f"runs: [{{name: asr, pipeline: {ASR}}}]\nmix: {{}}\nmix_export: [wenet]\n",
        r"mix_export: unknown format 'wenet'",
    ),
    "mix_export_without_mix": (
        INPUT_A + f"runs: [{{name: asr, pipeline: {ASR}}}]\nmix_export: [osum]\n",
        r"plan.yaml: mix_export needs a `mix:` section",
    ),
    "unknown_corpus": (
        f"inputs: {{b: {{prepare: nosuchcorpus, corpus_dir: /x}}}}\nruns: [{{name: asr, pipeline: {ASR}}}]\n",
        r"input 'b': unknown corpus 'nosuchcorpus'",
    ),
    "missing_manifest": (
        f"inputs: {{a: {{manifest: /nonexistent.jsonl.gz}}}}\nruns: [{{name: asr, pipeline: {ASR}}}]\n",
        r"input 'a': manifest not found: /nonexistent.jsonl.gz",
    ),
    "bad_builder": (
        f"inputs: {{a: {{builder: 'osum_data.demo:nope'}}}}\nruns: [{{name: asr, pipeline: {ASR}}}]\n",
        r"input 'a': builder 'osum_data.demo:nope'",
    ),
    # 29: run-all has no --input: the message points at the run's `input:` key
    "no_input": (
        f"runs: [{{name: asr, pipeline: {ASR}}}]\n",
        r"plan.yaml: run 'asr': give `input:` \(pipeline 'asr' has no source stage\)$",
    ),
    "input_to_a_source": (
        INPUT_A + f"runs: [{{name: p, pipeline: {REPO}/pipelines/persona.yaml}}]\n",
        r"run 'p': pipeline 'persona' makes its own input \(.*\): set `input: null`",
    ),
    # 9: run and input names become folder names
    "run_path_name": (
        INPUT_A + f"runs: [{{name: '../escape', pipeline: {ASR}}}]\n",
        r"run '\.\./escape': name '\.\./escape' must be letters, digits, '_' or '-'",
    ),
    "input_path_name": (
        f"inputs: {{'a/b': {{manifest: MANIFEST}}}}\nruns: [{{name: asr, pipeline: {ASR}}}]\n",
        r"plan.yaml: input 'a/b': name 'a/b' must be letters, digits",
    ),
    "run_named_like_a_plan_folder": (
        INPUT_A + f"runs: [{{name: mix, pipeline: {ASR}}}]\n",
        r"run 'mix': the name of a folder run-all writes itself",
    ),
    # 15: broken or non-mapping YAML names the file
    "broken_yaml": ("runs: [\n", r"plan.yaml: not valid YAML \(line 2, column 1\)"),
    "not_a_mapping": ('{"id": "a"}\n', r"plan.yaml: unknown key 'id'; known keys: description, inputs, runs"),
    "a_list": ("- 1\n- 2\n", r"plan.yaml: not a plan \(expected a mapping with runs:\)"),
}


@pytest.mark.parametrize("case", sorted(PLAN_ERRORS))
def test_the_whole_plan_is_validated_before_any_work(case, tmp_path, monkeypatch):
    """Defects 4, 5, 9, 15, 29: every part of the plan is checked when it loads (run-all calls
    load_plan before building inputs or running anything), one line naming the file, entry, key."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.jsonl.gz").write_bytes(b"")
    text, expected = PLAN_ERRORS[case]
    (tmp_path / "plan.yaml").write_text(text.replace("MANIFEST", str(tmp_path / "in.jsonl.gz")))
    with pytest.raises(ConfigError) as info:
        load_plan("plan.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert re.search(expected, message), message


def test_side_inputs_made_by_the_plan_validate_as_placeholders(tmp_path, monkeypatch):
    """`${name}` of an input built later or of an earlier run has no file yet: the pipeline still
    loads (the side input stands in), and each run's input is resolved (absent: the first input)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.jsonl.gz").write_bytes(b"")
    (tmp_path / "plan.yaml").write_text(
        f"inputs:\n  a: {{manifest: {tmp_path / 'in.jsonl.gz'}}}\n"
        "  noise: {builder: 'osum_data.demo.para:noise_input'}\n"
        "runs:\n"
        f"  - {{name: asr, pipeline: {ASR}}}\n"
        f"  - {{name: sgc, pipeline: {REPO}/pipelines/sgc.yaml, input: [a, asr],"
        " set: ['augment.noise=${noise}', 'augment.rir=${asr}']}\n"
        f"  - {{name: p, pipeline: {REPO}/pipelines/persona.yaml, input: null}}\n"
        "mix: {}\n"
    )
    plan = load_plan("plan.yaml")
    assert [r.input for r in plan.runs] == [["a"], ["a", "asr"], []]
    assert plan.export == {} and plan.mix == {} and plan.train is None


def test_a_planned_side_input_is_not_read_while_the_plan_is_validated(tmp_path):
    """Stage checks of a side input's content must wait for the run when the manifest is one the
    plan makes later (`SideInput.planned`); outside plan validation a missing file is still an error."""
    from pydantic import TypeAdapter, ValidationError

    from osum_data.run.params import SideInput, planned_side_inputs

    later = tmp_path / "noise.jsonl.gz"
    with planned_side_inputs([later]):
        side = TypeAdapter(SideInput).validate_python(str(later))  # no file: accepted
        assert side.planned is True
    assert side.planned is False  # the context is over
    with pytest.raises(ValidationError, match="does not exist"):
        TypeAdapter(SideInput).validate_python(str(later))


def _run_all(plan, out, cwd):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "osum_data.cli", "run-all", str(plan), "--output", str(out)]
    return subprocess.run(
        [*cmd, "--workers", "1", "--no-progress"], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_a_planned_task_with_no_samples_fails_the_plan_and_says_which(tmp_path):
    """Issue 15 item 4: a real plan whose `gender` run gets no usable cut (their audio is gone) ends
    with exit 1 naming the task and the reason, after the rest ran; the per-task table (stdout,
    tasks.json, the report's top) marks it. Before, run-all said "Done" and exited 0."""
    from osum_data.demo import write_cycled_manifest

    prompts = ["activated", "goodbye", "hello"]
    good = write_cycled_manifest(tmp_path / "good.jsonl.gz", 3, prompts)
    bad = tmp_path / "bad.jsonl"
    lines = []
    for d in read_jsonl(good):
        d["recording"]["sources"][0]["source"] = str(tmp_path / "gone" / f"{d['id']}.wav")
        lines.append(json.dumps(d))
    bad.write_text("\n".join(lines) + "\n")
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        f"inputs: {{good: {{manifest: {good}}}, bad: {{manifest: {bad}}}}}\n"
        "runs:\n"
        f"  - {{name: asr, pipeline: {ASR}, input: good, set: [audio_policy.min_sampling_rate=8000]}}\n"
        f"  - {{name: gender, pipeline: {REPO}/pipelines/sgc.yaml, input: bad,"
        " set: [audio_policy.min_sampling_rate=8000, augment.copies=0]}\n"
        "report: true\n"
    )
    proc = _run_all(plan, tmp_path / "out", REPO)
    assert proc.returncode == 1, proc.stderr[-2000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("osum-data run-all: error: ") and "sgc: 0 samples" in error, error
    assert "run 'gender': 3 in, 0 out, mostly check_audio:missing_file (3)" in error, error
    assert "asr:" not in error  # the task that arrived is not named
    assert "Done" not in proc.stdout
    rows = {
        line.split()[0]: line.split() for line in proc.stdout.split("Tasks:\n", 1)[1].splitlines() if line
    }
    assert rows["asr"][1:3] == ["ok", "3"] and rows["sgc"][1:3] == ["MISSING", "0"], proc.stdout
    table = json.loads((tmp_path / "out" / "tasks.json").read_text())
    assert table["complete"] is False
    assert [(r["task"], r["status"], r["samples"]) for r in table["tasks"]] == [
        ("asr", "ok", 3),
        ("sgc", "MISSING", 0),
    ]
    page = (tmp_path / "out" / "report" / "index.html").read_text()
    top = page.split("<section id='s0'>", 1)[0]  # the table comes before the first run's section
    assert "Incomplete: 1 task(s) missing or failed: sgc" in top and "<tr class='missing'><td>sgc</td>" in top


def test_a_run_whose_rejects_are_mostly_endpoint_failures_fails_its_task(tmp_path):
    """What the fresh machine of issue 15 saw: the ssr run's 24 cuts all rejected `unavailable`, and
    persona's source made nothing. Each becomes a named problem; a run with a few unavailable
    rejects among content rejects does not."""
    from osum_data.report.tasks import build_table, problems, run_problem

    def summary(name, reasons, out=0, cuts_by_task=None):
        (tmp_path / name).mkdir()
        s = {
            "in": out + sum(reasons.values()),
            "out": out,
            "rejected": sum(reasons.values()),
            "rejected_by_reason": reasons,
            "cuts_by_task": cuts_by_task or {},
            "hours_by_task": dict.fromkeys(cuts_by_task or {}, 0.01),
        }
        (tmp_path / name / "summary.json").write_text(json.dumps(s))
        return s

    summary("ssr", {"llm_style:unavailable": 24})
    sttc = summary(
        "sttc",
        {"llm_answerable:unavailable": 5, "llm_answerable:unanswerable": 2},
        out=10,
        cuts_by_task={"<TRANSCRIBE> <S2TCHAT>": 10},
    )
    ok = summary(
        "asr",
        {"llm_x:unavailable": 1, "filter_duration:too_short": 9},
        out=5,
        cuts_by_task={"<TRANSCRIBE>": 5},
    )
    assert run_problem("asr", ok) is None
    assert "5 of 7 rejects are endpoint failures (llm_answerable:unavailable)" in run_problem("sttc", sttc)
    table = build_table(tmp_path, {"asr": "asr", "ssr": "ssr", "sttc": "sttc"}, mix=False)
    status = {r["task"]: r["status"] for r in table["tasks"]}
    assert status == {"asr": "ok", "ssr": "MISSING", "sttc": "FAILED"} and not table["complete"]
    lines = problems(table)
    assert lines[0].startswith("ssr: 0 samples (run 'ssr': 24 in, 0 out, mostly llm_style:unavailable (24))")
    assert "endpoint failures" in lines[0] and lines[1].startswith("sttc: run 'sttc': 5 of 7")


def test_a_labelling_run_is_not_counted_again_but_its_problems_are(tmp_path):
    """Issue 17: a quality run over the sgc run's samples carries their task keys; the table counts
    them once (before, the sgc row doubled and listed the quality run among its runs). A run that
    plans no task keeps its problems named."""
    from osum_data.report.tasks import build_table

    keys = {"<TRANSCRIBE> <GENDER>": 4}
    for name, extra in (
        ("sgc", {}),
        ("quality", {"rejected": 6, "rejected_by_reason": {"x:unavailable": 6}}),
    ):
        (tmp_path / name).mkdir()
        s = {"in": 4, "out": 4, "cuts_by_task": keys, "hours_by_task": {"<TRANSCRIBE> <GENDER>": 0.01}}
        (tmp_path / name / "summary.json").write_text(json.dumps({**s, **extra}))
    table = build_table(tmp_path, {"sgc": "sgc", "quality": None}, mix=False, labelling=["quality"])
    (row,) = table["tasks"]
    assert (row["task"], row["samples"], row["runs"], row["hours"]) == ("sgc", 4, ["sgc"], 0.01)
    assert table["other_problems"][0].startswith("run 'quality': 6 of 6 rejects are endpoint failures")


def test_run_entry_says_whether_a_run_makes_samples(tmp_path):
    """By default a run makes task samples when its pipeline has a template stage with a task;
    `samples:` overrides that either way."""
    from osum_data.demo import write_cycled_manifest

    good = write_cycled_manifest(tmp_path / "good.jsonl.gz", 1, ["hello"])
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        f"inputs: {{good: {{manifest: {good}}}}}\n"
        "runs:\n"
        f"  - {{name: asr, pipeline: {ASR}}}\n"
        f"  - {{name: q, pipeline: {REPO}/pipelines/quality_demo.yaml, input: asr}}\n"
        f"  - {{name: qf, pipeline: {REPO}/pipelines/quality.yaml, input: asr, samples: true}}\n"
        f"  - {{name: asr2, pipeline: {ASR}, input: asr, samples: false}}\n"
    )
    runs = load_plan(plan).runs
    assert [r.makes_samples() for r in runs] == [True, False, True, False]


@pytest.mark.slow  # two Ray runs, a mix and an export: ~35 s on a loaded 2-core machine
def test_a_quality_run_in_a_plan_labels_without_feeding_the_mix_or_the_exports(tmp_path):
    """Issue 17 (`make demo`'s quality section, small): asr over real prompts, then a quality run
    over its samples in keep_measures_only mode. The quality run keeps every cut with its measures,
    makes no export and no dataset of the mix; the asr task counts its samples once; the plan ends
    with the quality table after the task table."""
    from osum_data.demo import write_cycled_manifest

    good = write_cycled_manifest(tmp_path / "good.jsonl.gz", 4, ["activated", "goodbye", "hello"])
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        f"inputs: {{good: {{manifest: {good}}}}}\n"
        "runs:\n"
        f"  - {{name: asr, pipeline: {ASR}, input: good, set: [audio_policy.min_sampling_rate=8000]}}\n"
        f"  - {{name: quality, pipeline: {REPO}/pipelines/quality_demo.yaml, input: asr}}\n"
        "export: {osum: {}}\n"
        "mix: {name: t, shard_size: 10}\n"
    )
    out = tmp_path / "out"
    proc = _run_all(plan, out, REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    quality = json.loads((out / "quality" / "summary.json").read_text())
    assert quality["in"] == quality["out"] == 4 and quality["rejected"] == 0  # labels only
    assert (out / "asr" / "osum").is_dir() and not (out / "quality" / "osum").exists()
    mix = json.loads((out / "mix" / "summary.json").read_text())
    assert list(mix["tasks"]) == ["asr"] and list(mix["tasks"]["asr"]["datasets"]) == ["asr"]
    assert mix["in"] == 4  # (the quality run's 4 copies of the same samples would make 8)
    table = json.loads((out / "tasks.json").read_text())
    assert [(r["task"], r["samples"], r["runs"]) for r in table["tasks"]] == [("asr", 4, ["asr"])]
    rows = table["quality"]["quality"]
    assert rows["snr_db"]["n"] == 4 and rows["bandwidth_hz"]["mean"] < 5000  # 8 kHz prompts
    closing = proc.stdout.split("Tasks:\n", 1)[1]
    assert "Quality of run 'quality'" in closing and "snr_db" in closing
