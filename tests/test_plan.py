"""Plans (`osum-data run-all`, `osum-data demo`): the bundled plans load and validate; a plan's mix
picks up every run as a dataset of its task."""

from __future__ import annotations

import json

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
    plan = load_plan(REPO / "pipelines" / name)
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
