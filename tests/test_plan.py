"""Plans (`osum-data run-all`, `osum-data demo`): the bundled plans load and validate; a plan's mix
picks up every run as a dataset of its task."""

from __future__ import annotations

import json
import re

import pytest

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
}


@pytest.mark.parametrize("name", ["all.yaml", "demo.yaml"])
def test_bundled_plans_load_and_their_mix_validates(name, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    plan = load_plan(REPO / "pipelines" / name, check_paths=name == "demo.yaml")  # all.yaml: /data/...
    for run in plan["runs"]:  # every run's pipeline exists (load_plan checks it)
        (tmp_path / run["name"]).mkdir()
        counts = dict.fromkeys(KEYS[run["name"]], 3)
        (tmp_path / run["name"] / "summary.json").write_text(json.dumps({"cuts_by_task": counts}))
    cfg = build_mix_config(mix_config_of(plan, tmp_path))
    assert set(cfg.tasks) == {"asr", "srwt", "ved", "ser", "sgc", "sap_sgc", "ssr", "sttc"}
    assert [d.name for d in cfg.tasks["sap_sgc"].datasets] == ["sgc-sap_sgc", "sap"]
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
    mix = mix_config_of({"runs": [{"name": "both"}], "mix": {}}, tmp_path)
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
        r"plan.yaml: run 'asr': unknown key 'inptu'$",
    ),
    "input_typo": (
        f"inputs: {{a: {{manifest: MANIFEST, corpus_dri: /x}}}}\nruns: [{{name: asr, pipeline: {ASR}}}]\n",
        r"plan.yaml: input 'a': unknown key 'corpus_dri'$",
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
        r"run 'asr': set: Input should be a valid list",
    ),
    "set_unknown_name": (
        "inputs: {a: {manifest: MANIFEST}}\nruns: [{name: sgc, pipeline: "
        f"{REPO}/pipelines/sgc.yaml, set: ['augment.noise=${{musan}}']}}]\n",
        r"run 'sgc': set: 'augment.noise=\$\{musan\}' names no input or earlier run",
    ),
    "late_mix": (
        INPUT_A + f"runs: [{{name: asr, pipeline: {ASR}}}]\nmix: {{temperature: -1}}\n",
        r"plan.yaml: mix: temperature: Input should be greater than 0",
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
        r"plan.yaml: export: unknown key 'osum.shard'$",
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
    "not_a_mapping": ('{"id": "a"}\n', r"plan.yaml: unknown key\(s\) id "),
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
    assert [r["input"] for r in plan["runs"]] == [["a"], ["a", "asr"], []]
    assert plan["export"] == {} and plan["mix"] == {} and plan["train"] is None


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
