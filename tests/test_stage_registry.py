"""The stage registry: the package's `osum_data.stages` entry points (pyproject.toml) list every stage
under its module and are what lookup uses, also from a source tree; no module paths in the bundled
pipelines; `osum-data stages`; and a new stage added from outside the package in a few lines."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib

from osum_data.manifest_io import read_jsonl
from osum_data.run.stage import get_stage, stage_modules
from osum_data.yaml_config import load_yaml_file
from tests.conftest import REPO, TESTS
from tests.test_runner import demo_like_manifest

PACKAGE = REPO / "osum_data"
_DECORATED = re.compile(r"^@(register_stage|per_cut_stage|source_stage)\(", re.M)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)])}


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True)


PYPROJECT_TABLE = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"][
    "osum_data.stages"
]


def test_lookup_uses_the_entry_points_of_pyproject_from_a_source_tree():
    """The venv's editable install predates the table: lookup must read it from pyproject.toml."""
    assert {k: stage_modules()[k] for k in PYPROJECT_TABLE} == PYPROJECT_TABLE


def test_every_stage_the_package_defines_is_in_the_table_under_its_module():
    """Imports every module that registers a stage (found by its decorators) in a fresh process:
    the stages registered are exactly the table's, and each table module registers its names."""
    modules = sorted(
        ".".join(p.relative_to(REPO).with_suffix("").parts)
        for p in PACKAGE.rglob("*.py")
        if _DECORATED.search(p.read_text(encoding="utf-8")) and p.parent.name != "run"
    )
    code = (
        "import importlib, json\n"
        "from osum_data.run import stage\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "print(json.dumps({k: d.hints_of.__module__ for k, d in stage._REGISTRY.items()}))\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    defined_in = json.loads(proc.stdout)
    assert sorted(defined_in) == sorted(PYPROJECT_TABLE)
    for name, module in PYPROJECT_TABLE.items():
        assert f"{defined_in[name]}.".startswith(f"{module}."), f"{module} does not register {name!r}"


def test_no_bundled_pipeline_names_a_module_and_each_loads():
    for path in sorted((REPO / "pipelines").glob("*.yaml")):
        text = path.read_text()
        assert not re.search(r"^imports:", text, re.M), path
        if path.stem not in ("all", "demo"):  # plans (their input builders are house-cli's)
            assert "osum_data." not in "".join(ln.split("#")[0] for ln in text.splitlines()), path
            for entry in load_yaml_file(path)["stages"]:  # each stage is found without imports
                assert get_stage(entry["stage"]).name == entry["stage"]


def test_a_lookup_imports_only_the_module_of_the_stage_it_names():
    """The engine loads a stage's module on first use, not every built-in module at start."""
    proc = _python(
        "import sys\n"
        "from osum_data.run.config import load_pipeline\n"
        "load_pipeline('pipelines/asr.yaml', ['template.task=ved'])\n"
        "print('osum_data.template.builder' in sys.modules, 'osum_data.label.chat' in sys.modules)\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "False"]


def test_an_unknown_stage_names_the_known_ones():
    from osum_data.run.config import ConfigError, build_config

    try:
        build_config({"stages": [{"stage": "normalise_text"}]}, "p.yaml")
    except ConfigError as e:
        assert "unknown stage 'normalise_text'" in str(e) and "normalize_text" in str(e)
    else:
        raise AssertionError("an unknown stage was accepted")


NEW_STAGE = '''
from osum_data.run.stage import Reject, per_cut_stage

@per_cut_stage("shout")
def shout(cut, marks: int = 1, min_words: int = 0):
    """Upper-case the transcript; reject cuts with fewer than `min_words` words."""
    sup = cut.supervisions[0]
    if len(sup.text.split()) < min_words:
        raise Reject("too_short", f"{len(sup.text.split())} words")
    sup.text = sup.text.upper() + "!" * marks
    return cut
'''


def test_a_new_stage_is_added_and_run_in_a_few_lines(tmp_path):
    """Item 7 of issue 19: define, register and run a stage through `osum-data run`."""
    (tmp_path / "my_stages.py").write_text(NEW_STAGE)
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("imports: [my_stages]\nstages:\n  - stage: shout\n    marks: 2\n    min_words: 2\n")
    manifest = demo_like_manifest(tmp_path, 12)
    env = {**_env(), "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO), str(TESTS)])}
    cmd = [sys.executable, "-m", "osum_data.cli", "run", str(pipeline), "--input", str(manifest)]
    cmd += ["--output", str(tmp_path / "out"), "--workers", "1", "--no-progress"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    kept = list(read_jsonl(tmp_path / "out" / "cuts.jsonl.gz"))
    rejects = list(read_jsonl(tmp_path / "out" / "rejects.jsonl.gz"))
    assert kept and all(c["supervisions"][0]["text"].endswith("!!") for c in kept)
    assert all(c["supervisions"][0]["text"].isupper() for c in kept)
    assert {r["custom"]["reject"]["code"] for r in rejects} <= {"too_short"}
    assert len(kept) + len(rejects) == 12


def test_the_stages_command_lists_every_stage_with_typed_parameters_and_resources(capsys):
    from osum_data.cli import main

    assert main(["stages", "--json"]) == 0
    listed = {d["stage"]: d for d in json.loads(capsys.readouterr().out)}
    assert set(PYPROJECT_TABLE) <= set(listed)
    params = {p["name"]: (p["type"], p["default"]) for p in listed["filter_duration"]["params"]}
    assert params["max_duration"] == ("float", 30.0) and params["min_duration"][0] == "float"
    policy = {p["name"]: p["type"] for p in listed["audio_policy"]["params"]}
    assert policy["channels"] == "'reject' | 'first' | 'downmix'"
    assert listed["align_ctc"]["resources"]["num_gpus"] == 1 and listed["llm_style"]["uses_llm"]
    assert "ctx" not in {p["name"] for d in listed.values() for p in d["params"]}
    assert main(["stages", "filter_cps"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("filter_cps  (per_cut, v1; cpus 1, gpus 0, pool per worker)")
    assert "    max_cps: float = " in text
    assert main(["stages", "no_such_stage"]) == 2
    assert "unknown stage 'no_such_stage'" in capsys.readouterr().err


def test_a_stage_whose_module_cannot_be_imported_is_a_config_error(monkeypatch):
    from osum_data.run.config import ConfigError, build_config

    monkeypatch.setitem(stage_modules(), "ghost", "osum_data.no_such_module")
    try:
        build_config({"stages": [{"stage": "ghost"}]}, "p.yaml")
    except ConfigError as e:
        assert str(e).startswith("p.yaml: stage #1: cannot import stage 'ghost'"), str(e)
    else:
        raise AssertionError("a stage without its module was accepted")
