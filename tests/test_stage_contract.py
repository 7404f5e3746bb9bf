"""Stage contract v2: typed parameters checked before work, the stage context (seed, shard, files),
per-stage accounting, side inputs, resource groups, source stages and entry-point registration."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lhotse import CutSet

from osum_data.manifest_io import read_jsonl, write_jsonl
from osum_data.run.config import ConfigError, build_config, load_pipeline, package_data_digest
from osum_data.run.runner import RunError, run_pipeline, split_groups
from tests.conftest import REPO, TESTS
from tests.test_runner import demo_like_manifest

ASR = REPO / "pipelines" / "asr.yaml"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "filter_duration.max_duration=abc",
            r"stage 'filter_duration': max_duration='abc': Input should be a valid number",
        ),
        (
            "audio_policy.channels=downmx",
            r"stage 'audio_policy': channels='downmx': Input should be 'reject', 'first' or 'downmix'",
        ),
        (
            "normalize_text.angle_brackets=rejekt",
            r"angle_brackets='rejekt': Input should be 'reject' or 'strip'",
        ),
        ('normalize_text.strip_brackets=["<>"]', r"strip_brackets.0='<>'"),
        (
            "filter_duration.min_duration=40",
            r"stage 'filter_duration': min_duration 40.0 is above max_duration 30.0",
        ),
        ("filter_duration.min_duration=-1", r"min_duration=-1: Input should be greater than or equal to 0"),
        ("audio_policy.min_sampling_rate=22050", r"min_sampling_rate 22050 is above sampling_rate 16000"),
        ("template.task=sgcx", r"stage 'template': task='sgcx': unknown task; known: asr, srwt"),
        ("template.x_only_ratio=1.5", r"x_only_ratio=1.5: Input should be less than or equal to 1"),
        ("shard_size=abc", r"asr.yaml: shard_size='abc': Input should be a valid integer"),
        ("shard_size=0", r"shard_size=0: Input should be greater than or equal to 1"),
        ("sede=1", r"unknown key 'sede'; known keys: name, description, shard_size, seed"),
        (
            "filter_cps.resources={num_gpu: 1}",
            r"stage 'filter_cps': resources: unknown key 'num_gpu'; known keys: num_cpus, num_gpus",
        ),
    ],
)
def test_bad_parameters_fail_at_load_with_one_line_naming_stage_and_key(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_pipeline(ASR, [override])
    assert "\n" not in str(info.value)


def test_parameters_are_coerced_to_their_types():
    cfg = load_pipeline(ASR, ['normalize_text.lowercase="false"', "filter_duration.max_duration=20"])
    norm = next(s for s in cfg.stages if s.name == "normalize_text")
    assert norm.params["lowercase"] is False and norm.typed_params()["lowercase"] is False
    assert isinstance(norm.typed_params()["strip_brackets"], list)
    # One configuration however it is spelled: the hash sees the canonical values.
    assert (
        cfg.hash()
        == load_pipeline(ASR, ["normalize_text.lowercase=false", "filter_duration.max_duration=20.0"]).hash()
    )


def test_config_hash_covers_stage_versions_and_package_data(tmp_path):
    cfg = load_pipeline(ASR)
    before = cfg.hash()
    cfg.stages[0].version += 1
    assert cfg.hash() != before
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "labels.yaml").write_text("a: 1\n")
    one = package_data_digest(tmp_path)
    (tmp_path / "tasks" / "labels.yaml").write_text("a: 2\n")
    package_data_digest.cache_clear()
    assert package_data_digest(tmp_path) != one
    assert set(load_pipeline(ASR).hash_inputs()) == {"config", "versions", "side_inputs", "package_data"}


def _cfg(stages: list[dict], **top) -> dict:
    return {"name": "t", "shard_size": 10, "imports": ["stages_for_tests"], "stages": stages, **top}


def test_pipeline_seed_reaches_stages_through_the_context(tmp_path, ray_session):
    manifest = demo_like_manifest(tmp_path, 30)
    outs = {}
    for seed in (0, 1, 0):
        cfg = build_config(_cfg([{"stage": "template", "task": "asr"}], seed=seed))
        out = tmp_path / f"seed{seed}-{len(outs)}"
        run_pipeline(cfg, manifest, out, workers=1, progress=False)
        outs[len(outs)] = [c["custom"]["instruction"] for c in read_jsonl(out / "cuts.jsonl.gz")]
    assert outs[0] == outs[2] and outs[0] != outs[1]
    with pytest.raises(ConfigError, match="unknown parameter 'seed'"):
        build_config(_cfg([{"stage": "template", "seed": 3}]))


def test_batch_retry_starts_from_the_batch_as_it_came(tmp_path, ray_session):
    manifest = demo_like_manifest(tmp_path, 10)
    marker = next(read_jsonl(manifest))["id"]  # the first cut makes the batch call raise
    cfg = build_config(_cfg([{"stage": "count_then_fail", "marker": marker}]))
    res = run_pipeline(cfg, manifest, tmp_path / "out", workers=1, progress=False)
    kept = list(read_jsonl(tmp_path / "out" / "cuts.jsonl.gz"))
    assert res.summary["out"] == 9 and res.summary["rejected"] == 1
    assert {c["custom"]["count"] for c in kept} == {1}, "a stage was applied twice to a retried cut"
    (rej,) = read_jsonl(tmp_path / "out" / "rejects.jsonl.gz")
    assert rej["id"] == marker and rej["custom"]["reject"]["code"] == "error"


def test_a_silently_dropped_cut_becomes_a_reject_and_an_orphan_stops_the_run(tmp_path, ray_session):
    manifest = demo_like_manifest(tmp_path, 10)
    victim = list(read_jsonl(manifest))[4]["id"]
    cfg = build_config(_cfg([{"stage": "drop_silently", "marker": victim}]))
    res = run_pipeline(cfg, manifest, tmp_path / "a", workers=1, progress=False)
    assert (res.summary["out"], res.summary["rejected"]) == (9, 1)
    assert res.summary["rejected_by_reason"] == {"drop_silently:dropped_by_stage": 1}
    with pytest.raises(
        RunError, match="stage 'orphan_output' returned cut 'made-up', which is none of its inputs"
    ):
        run_pipeline(
            build_config(_cfg([{"stage": "orphan_output"}])),
            manifest,
            tmp_path / "b",
            workers=1,
            progress=False,
        )


def test_derived_cuts_are_linked_counted_and_their_files_kept(tmp_path, ray_session):
    manifest = demo_like_manifest(tmp_path, 25)
    cfg = build_config(_cfg([{"stage": "copies", "n": 2}, {"stage": "reject_copies"}], seed=7))
    res = run_pipeline(cfg, manifest, tmp_path / "out", workers=2, progress=False)
    s = res.summary
    assert (s["in"], s["out"], s["rejected"], s["derived"]) == (25, 50, 25, 50)
    assert s["in"] == s["out"] - s["derived"] + s["rejected"]
    assert s["accounting"] == "in 25 = out 50 - derived 50 + rejected 25"
    stages = {st["stage"]: st for st in s["stages"]}
    assert stages["copies"] == {"stage": "copies", "in": 25, "out": 75, "rejected": 0, "derived": 50}
    assert stages["reject_copies"] == {
        "stage": "reject_copies",
        "in": 75,
        "out": 50,
        "rejected": 25,
        "derived": 0,
    }
    kept = list(read_jsonl(tmp_path / "out" / "cuts.jsonl.gz"))
    copies = [c for c in kept if "_copy0" in c["id"]]
    assert len(copies) == 25 and all(
        c["custom"]["source_cut_id"] == c["id"][: -len("_copy0")] for c in copies
    )
    # Files a stage wrote live in the shard's files directory, fixed by the seed and shard index.
    first = copies[0]["id"]
    text = (tmp_path / "out" / "files" / "000000" / "copies" / f"{first}.txt").read_text()
    assert text == f"7 0 {first}\n"
    assert sorted(p.name for p in (tmp_path / "out" / "files").iterdir()) == ["000000", "000001", "000002"]


def test_a_side_input_is_loaded_by_the_stage_and_hashed_by_content(tmp_path, ray_session):
    manifest = demo_like_manifest(tmp_path, 12)
    clips = tmp_path / "clips.jsonl.gz"
    (tmp_path / "c").mkdir()
    shutil.copy(demo_like_manifest(tmp_path / "c", 3), clips)
    cfg = build_config(_cfg([{"stage": "tag_side_input", "clips": str(clips)}]))
    res = run_pipeline(cfg, manifest, tmp_path / "out", workers=2, progress=False)
    assert {c["custom"]["side_cuts"] for c in read_jsonl(tmp_path / "out" / "cuts.jsonl.gz")} == {3}
    assert res.summary["out"] == 12
    moved = tmp_path / "moved.jsonl.gz"
    shutil.copy(clips, moved)
    assert (
        build_config(_cfg([{"stage": "tag_side_input", "clips": str(moved)}])).hash_inputs()["side_inputs"]
        == (cfg.hash_inputs()["side_inputs"])
    )
    write_jsonl(moved, list(read_jsonl(clips))[:2])
    changed = build_config(_cfg([{"stage": "tag_side_input", "clips": str(moved)}]))
    assert changed.hash() != cfg.hash()
    with pytest.raises(
        ConfigError, match="clips='nowhere.jsonl.gz': side-input manifest 'nowhere.jsonl.gz' does not exist"
    ):
        build_config(_cfg([{"stage": "tag_side_input", "clips": "nowhere.jsonl.gz"}]))


def test_stages_with_other_resources_run_in_their_own_pool(tmp_path, ray_session):
    manifest = demo_like_manifest(tmp_path, 40)
    raw = _cfg(
        [
            {"stage": "normalize_text"},
            {"stage": "record_pid"},  # num_cpus 0.5, concurrency 1: a pool of one actor
            {"stage": "needs_gpu"},  # asks for a GPU; this cluster has none, so it runs on CPU
            {"stage": "template"},
        ]
    )
    cfg = build_config(raw)
    groups = split_groups(cfg.chain)
    assert [g.names for g in groups] == [["normalize_text"], ["record_pid"], ["needs_gpu"], ["template"]]
    notes: list[str] = []
    res = run_pipeline(cfg, manifest, tmp_path / "out", workers=2, progress=False, on_notice=notes.append)
    assert res.summary["in"] == 40 and res.summary["out"] >= 35  # a few demo transcripts are empty
    assert any("ask for 1 GPU(s); the cluster has none, so they run on CPU" in n for n in notes)
    kept = list(read_jsonl(tmp_path / "out" / "cuts.jsonl.gz"))
    small, gpu = {c["custom"]["small_pool_pid"] for c in kept}, {c["custom"]["gpu_stage_pid"] for c in kept}
    assert len(small) == 1 and len(gpu) == 2 and not small & gpu
    assert CutSet.from_file(tmp_path / "out" / "cuts.jsonl.gz")[0].custom["task"] == "<TRANSCRIBE>"


def test_a_source_stage_makes_the_input(tmp_path, ray_session):
    cfg = build_config(
        {
            "name": "src",
            "shard_size": 4,
            "imports": ["stages_for_tests"],
            "seed": 5,
            "stages": [
                {"stage": "numbered_prompts", "n": 10},
                {"stage": "normalize_text"},
                {"stage": "template", "task": "asr"},
            ],
        }
    )
    res = run_pipeline(cfg, None, tmp_path / "out", workers=2, progress=False)
    assert (res.summary["in"], res.summary["out"], res.summary["shards"]) == (10, 10, 3)
    kept = list(read_jsonl(tmp_path / "out" / "cuts.jsonl.gz"))
    assert kept[0]["id"] == "src-5-0000" and kept[3]["custom"]["target"] == "prompt number 3"
    with pytest.raises(ValueError, match="makes its own input"):
        run_pipeline(cfg, tmp_path / "out" / "cuts.jsonl.gz", tmp_path / "x", progress=False)
    with pytest.raises(ConfigError, match="must be the first stage"):
        build_config(_cfg([{"stage": "normalize_text"}, {"stage": "numbered_prompts"}]))


def test_an_installed_package_adds_stages_through_an_entry_point(tmp_path):
    """A user package (a dist-info with entry_points.txt on the path, as pip installs it) registers
    a stage without editing osum-data or naming it under `imports:`."""
    site = tmp_path / "site"
    (site / "my_stages_pkg").mkdir(parents=True)
    (site / "my_stages_pkg" / "__init__.py").write_text(
        "from osum_data.run.stage import per_cut_stage\n\n"
        "@per_cut_stage('shout')\n"
        "def shout(cut, times: int = 1):\n"
        "    cut.supervisions[0].text = cut.supervisions[0].text.upper() + '!' * times\n"
        "    return cut\n"
    )
    dist = site / "my_stages_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-stages-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[osum_data.stages]\nshout = my_stages_pkg\n")
    code = (
        "from osum_data.run.config import build_config\n"
        "cfg = build_config({'stages': [{'stage': 'shout', 'times': 'x'}]})\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO), str(TESTS)])}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert "stage 'shout': times='x': Input should be a valid integer" in proc.stderr
    ok = code.replace("'times': 'x'", "'times': 2") + "print(cfg.stages[0].stage)\n"
    proc = subprocess.run([sys.executable, "-c", ok], env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "shout", proc.stderr


def test_an_llm_stage_gets_the_embedded_server_and_reports_its_tokens(tmp_path, ray_session, monkeypatch):
    """No endpoint configured: the runner starts the real embedded server on SmolLM2-135M
    for the run, the stage's counters land in summary.json, and a re-run into a new folder is
    answered from the cache (zero requests)."""
    for var in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_MODEL"):
        monkeypatch.delenv(var, raising=False)
    manifest = demo_like_manifest(tmp_path, 4)
    # The cache goes through the config: Ray workers started earlier do not see a patched env.
    llm = {"cache_dir": str(tmp_path / "cache")}
    cfg = build_config(_cfg([{"stage": "normalize_text"}, {"stage": "llm_title"}], llm=llm))
    assert cfg.uses_llm
    notes: list[str] = []
    res = run_pipeline(cfg, manifest, tmp_path / "a", workers=1, progress=False, on_notice=notes.append)
    row = next(st for st in res.summary["stages"] if st["stage"] == "llm_title")
    assert row["in"] == row["out"] + row["rejected"] and row["out"] >= 1
    assert row["counters"]["requests"] >= row["in"] and row["counters"]["completion_tokens"] > 0
    assert any("embedded local server" in n for n in notes)
    titles = [c["custom"]["title"] for c in read_jsonl(tmp_path / "a" / "cuts.jsonl.gz")]
    assert all(isinstance(t, str) and t for t in titles)
    again = run_pipeline(cfg, manifest, tmp_path / "b", workers=1, progress=False)
    row = next(st for st in again.summary["stages"] if st["stage"] == "llm_title")
    assert row["counters"]["requests"] == 0 and row["counters"]["cache_hits"] == row["in"]
    with pytest.raises(ConfigError, match="llm.temperature"):
        build_config(_cfg([{"stage": "llm_title"}], llm={"temperature": "hot"}))
    over = load_pipeline_with_llm(tmp_path, ["llm.base_url=http://127.0.0.1:9/v1", "llm.model=m"])
    assert over.llm == {"base_url": "http://127.0.0.1:9/v1", "model": "m"}


def load_pipeline_with_llm(tmp_path: Path, overrides: list[str]):
    path = tmp_path / "llm.yaml"
    path.write_text("name: l\nimports: [stages_for_tests]\nstages:\n  - stage: llm_title\n")
    return load_pipeline(path, overrides)


def test_a_stage_cannot_take_a_parameter_named_like_an_entry_key():
    """A parameter called `name` used to rename the entry in the workers' copy of the config."""
    from osum_data.run.stage import per_cut_stage

    with pytest.raises(ValueError, match="parameter 'name' clashes with the pipeline entry key"):

        @per_cut_stage("has_name_param")
        def has_name_param(cut, name: str = "x"):
            return cut
