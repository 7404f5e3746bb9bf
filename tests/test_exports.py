"""Every export read back: OSUM (moved --relative folder, data_config of a mix), NeMo (lhotse loads
the speechlm2 cuts; the JSON manifest's files decode), Hugging Face (`datasets` loads the Parquet and
decodes the Audio feature), ShareGPT (LLaMA-Factory's sharegpt rules; `datasets` loads the JSONL).

Inputs: real ASR pipeline output relabelled into other tasks (tests/mix_fixtures.py), mixed for real.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from lhotse import CutSet

from osum_data.cli import build_parser
from osum_data.export import formats, read_data_list, read_shards
from osum_data.export.engine import RUN_DIR, concat_text, part_dirs
from osum_data.export.formats import ExportFormat, export, register_format, run_format
from osum_data.export.osum_audit import check_osum_export
from osum_data.export.osum_config import expand_data_config
from osum_data.export.samples import FormatStage
from osum_data.manifest_io import read_jsonl, write_jsonl
from osum_data.mix.build import build_mix
from osum_data.mix.config import build_mix_config
from osum_data.run.stage import register_stage
from tests.conftest import REPO
from tests.mix_fixtures import shared_asr, task_manifest


@pytest.fixture(scope="module")
def mix(tmp_path_factory):
    asr = shared_asr(tmp_path_factory)
    d = tmp_path_factory.mktemp("exports")
    raw = {
        "audio": "none",
        "splits": {"dev": 0.1, "test": 0.1},
        "tasks": {
            "asr": {
                "weight": 0.5,
                "datasets": [str(task_manifest(asr, "asr", d / "asr.jsonl.gz", n=40, speakers=8))],
            },
            "ser": {
                "weight": 0.5,
                "datasets": [str(task_manifest(asr, "ser", d / "ser.jsonl.gz", n=20, speakers=6))],
            },
        },
    }
    build_mix(build_mix_config(raw), d / "mix", progress=False)
    return d / "mix"


def source_audio(cut_dict: dict) -> np.ndarray:
    return CutSet.from_dicts([json.loads(json.dumps(cut_dict))])[0].resample(16000).load_audio()[0]


def plan_cuts(mix: Path) -> dict[str, dict]:
    return {d["id"]: d for d in read_jsonl(mix / "plan" / "mix.jsonl.gz")}


def test_osum_relative_export_moves_with_its_folder(mix, tmp_path):
    manifest = mix / "plan" / "train" / "ser" / "ser.jsonl.gz"
    export("osum", manifest, tmp_path / "osum", shards=True, relative=True, shard_size=7)
    moved = tmp_path / "elsewhere" / "osum"
    shutil.move(tmp_path / "osum", moved)
    lines = [json.loads(x) for x in (moved / "data.list").read_text().splitlines()]
    assert lines and all(x["wav"].startswith("wav/") for x in lines)  # all audio inside the folder
    assert all(not Path(p).is_absolute() for p in (moved / "shards_list.txt").read_text().splitlines())
    cuts = {d["id"]: d for d in read_jsonl(manifest)}
    raw = list(read_data_list(moved / "data.list"))
    sharded = list(read_shards(moved / "shards_list.txt"))
    assert [s.key for s in raw] == [s.key for s in sharded] == list(cuts)
    for s in raw[:5]:
        np.testing.assert_allclose(s.audio, source_audio(cuts[s.key]), atol=1.01 / 32768)
        # the default dialect (echat) spells anger <ANGER> (osum_dialects.yaml)
        assert (
            s.txt == cuts[s.key]["custom"]["target"].replace("<ANGRY>", "<ANGER>") and s.extra["instruction"]
        )


def test_osum_data_config_of_a_mix(mix, tmp_path):
    """OSUM's own weighting rule (handle_data_for_weight.py, osum_weights.py) over the written
    data_config gives every task its planned share: integer weights on copy groups, so no task is
    dropped and no fraction cut off (the old config wrote the fractional factors as weights)."""
    summary = export("osum", mix, tmp_path / "osum", shard_size=6)
    out = tmp_path / "osum"
    config = yaml.safe_load((out / "data_config.yaml").read_text())
    mix_summary = json.loads((mix / "summary.json").read_text())
    assert mix_summary["tasks"]["ser"]["datasets"]["ser"]["factor"] > 1.4  # ser is the small task
    assert mix_summary["tasks"]["asr"]["datasets"]["asr"]["factor"] < 1  # asr is subsampled
    per_task: dict[str, int] = {}
    for name, entry in config.items():
        task, ds, copies = name.split(".")
        assert entry["weight"] == int(copies.removeprefix("x")) >= 1 and isinstance(entry["weight"], int)
        keys = [s.key for s in read_shards(entry["path"])]
        # a group's cuts are contiguous: full shards of 6, a partial one only where a group starts or
        # ends inside one of the run's shards
        assert (
            len(keys) == entry["cuts"]
            and -(-entry["cuts"] // 6) <= entry["shard_num"] <= -(-entry["cuts"] // 6) + 1
        )
        per_task[task] = per_task.get(task, 0) + entry["weight"] * entry["cuts"]
    planned = {
        t: sum(d["planned_cuts"] for d in v["datasets"].values()) for t, v in mix_summary["tasks"].items()
    }
    assert per_task == planned  # exactly the mix's counts
    # the list OSUM's rule makes: every task's share of a pass as planned (within 2 %), none dropped
    expanded = expand_data_config(out / "data_config.yaml")
    shards = {p: samples_in_tar(p) for p in set(expanded)}
    realised = {t: 0 for t in planned}
    for p in expanded:
        realised[Path(p).relative_to(out).parts[1]] += shards[p]
    total, total_plan = sum(realised.values()), sum(planned.values())
    for task in planned:
        assert realised[task] / total == pytest.approx(planned[task] / total_plan, rel=0.02)
    assert summary["osum_plan"]["tasks"]["asr"]["error"] <= 0.02
    dev = [s.key for s in read_shards(out / "dev_shards_list.txt")]
    assert len(dev) == sum(t["dev_cuts"] for t in mix_summary["tasks"].values()) > 0
    assert summary["exported"] == summary["cuts"] and summary["rejected"] == 0
    rows = check_osum_export(out)
    assert {r["task"] for r in rows if r["check"] == "osum_proportion"} == set(planned)
    assert not [r for r in rows if r["status"] == "fail"], rows
    # the old config's weights (the mix's fractional factors) on the same shards: the audit fails it
    for name, entry in config.items():
        task, ds, _ = name.split(".")
        entry["weight"] = mix_summary["tasks"][task]["datasets"][ds]["factor"]
    (out / "data_config.yaml").write_text(yaml.safe_dump(config))
    failed = [r for r in check_osum_export(out) if r["check"] == "osum_proportion" and r["status"] == "fail"]
    assert failed


def samples_in_tar(path: str) -> int:
    with tarfile.open(path) as tar:
        return sum(1 for m in tar if m.name.endswith(".txt"))


def test_nemo_export_is_lhotse_cuts_and_a_nemo_manifest(mix, tmp_path):
    out = tmp_path / "nemo"
    summary = export("nemo", mix, out, relative=True)
    mix_summary = json.loads((mix / "summary.json").read_text())
    dev = sum(t["dev_cuts"] for t in mix_summary["tasks"].values())
    assert summary["splits"] == {
        "train": mix_summary["out"],
        "dev": dev,
        "test": sum(t["test_cuts"] for t in mix_summary["tasks"].values()),
    }
    plan = plan_cuts(mix)
    import os

    cwd = os.getcwd()
    os.chdir(out)  # relative paths: lhotse opens them from the export folder
    try:
        cuts = CutSet.from_file(out / "train_cuts.jsonl")
        n = 0
        for cut in cuts:
            src = plan[cut.id]
            assert cut.context == src["custom"]["instruction"]  # speechlm2: the prompt in `context`
            assert cut.supervisions[0].text == src["custom"]["target"]  # ... the answer as supervision text
            assert cut.custom["transcript"] == src["supervisions"][0]["text"]
            audio = cut.load_audio()[0]
            assert cut.sampling_rate == 16000
            np.testing.assert_allclose(audio, source_audio(src), atol=1.01 / 32768)
            n += 1
        assert n == mix_summary["out"]
    finally:
        os.chdir(cwd)
    for line in (out / "dev_manifest.json").read_text().splitlines():
        m = json.loads(line)
        info = sf.info(out / m["audio_filepath"])  # NeMo resolves it against the manifest's folder
        assert (info.samplerate, info.channels) == (16000, 1)
        assert m["duration"] == pytest.approx(info.frames / 16000)
        assert m["context"] == plan[m["id"]]["custom"]["instruction"] and m["answer"] == m["text"]
    cfg = yaml.safe_load((out / "input_cfg.yaml").read_text())
    assert cfg == [{"type": "lhotse", "cuts_path": "train_cuts.jsonl", "weight": 1.0}]


def test_hf_export_loads_with_datasets(mix, tmp_path):
    import datasets

    out = tmp_path / "hf"
    summary = export("hf", mix, out)
    ds = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf-cache"))
    mix_summary = json.loads((mix / "summary.json").read_text())
    assert set(ds) == {"train", "validation", "test"}
    assert len(ds["train"]) == mix_summary["out"] == summary["splits"]["train"]
    assert isinstance(ds["train"].features["audio"], datasets.Audio)
    assert ds["train"].features["audio"].sampling_rate == 16000
    plan = plan_cuts(mix)
    for row in ds["validation"]:
        src = plan[row["id"]]
        assert row["target"] == src["custom"]["target"] and row["task"] == src["custom"]["task"]
        assert row["instruction"] == src["custom"]["instruction"]
        samples = row["audio"].get_all_samples()  # datasets decodes the Audio feature (torchcodec)
        assert samples.sample_rate == 16000
        np.testing.assert_allclose(samples.data.numpy()[0], source_audio(src), atol=1.01 / 32768)
        labels = json.loads(row["labels"])
        assert labels.get("emotion") == src["supervisions"][0]["custom"].get("emotion")
    raw = datasets.load_dataset(
        "parquet", data_files=str(out / "data" / "test-*.parquet"), cache_dir=str(tmp_path / "hf-cache")
    )["train"]
    assert len(raw) == len(ds["test"]) and isinstance(raw.features["audio"], datasets.Audio)


def llama_factory_sharegpt(row: dict) -> tuple[list[dict], list[str]]:
    """The checks LLaMA-Factory's sharegpt converter makes (user/assistant turns alternate, starting
    with the user; one `<audio>` placeholder per entry of `audios`), returning (messages, audios)."""
    messages, audios = row["messages"], row["audios"]
    assert len(messages) % 2 == 0 and messages
    for i, m in enumerate(messages):
        assert m["role"] == ("user" if i % 2 == 0 else "assistant"), messages
        assert isinstance(m["content"], str) and m["content"]
    placeholders = sum(m["content"].count("<audio>") for m in messages)
    assert placeholders == len(audios), (placeholders, audios)
    return messages, audios


def test_sharegpt_export_follows_llama_factory(mix, tmp_path):
    import datasets

    out = tmp_path / "sharegpt"
    export("sharegpt", mix, out, relative=True)
    info = json.loads((out / "dataset_info.json").read_text())
    assert set(info) == {"osum_train", "osum_dev", "osum_test"}
    plan = plan_cuts(mix)
    for entry in info.values():
        assert entry["formatting"] == "sharegpt" and entry["columns"] == {
            "messages": "messages",
            "audios": "audios",
        }
        rows = datasets.load_dataset(
            "json", data_files=str(out / entry["file_name"]), cache_dir=str(tmp_path / "hf-cache")
        )["train"]
        assert len(rows) > 0
        for row in rows:
            messages, audios = llama_factory_sharegpt(row)
            src = plan[row["id"]]
            assert messages[0]["content"] == "<audio>" + src["custom"]["instruction"]
            assert messages[1]["content"] == src["custom"]["target"]
            audio, sr = sf.read(out / audios[0], dtype="float32")  # relative to dataset_dir
            assert sr == 16000 and len(audio) == len(source_audio(src))
    # repeated training copies share one audio file
    train_rows = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    assert len({r["audios"][0] for r in train_rows}) < len(train_rows)
    assert len(list((out / "audio").glob("*.flac"))) == len(plan) - sum("_repeat" in i for i in plan)


def test_rejects_resume_and_cli_errors(mix, tmp_path):
    rows = list(read_jsonl(mix / "plan" / "train" / "asr" / "asr.jsonl.gz"))[:6]
    rows[1] = dict(rows[1], custom={})  # not a task sample
    gone = tmp_path / "gone.wav"
    shutil.copy(rows[2]["recording"]["sources"][0]["source"], gone)
    rows[2]["recording"]["sources"][0]["source"] = str(gone)
    write_jsonl(tmp_path / "cuts.jsonl.gz", rows)
    gone.unlink()
    first = export("hf", tmp_path / "cuts.jsonl.gz", tmp_path / "hf", shard_size=2)
    assert (first["cuts"], first["exported"], first["rejected"]) == (6, 4, 2)
    assert first["rejected_by_reason"] == first["reasons"] == {"audio": 1, "missing_instruction": 1}
    rejects = {r["id"]: r["custom"]["reject"] for r in read_jsonl(tmp_path / "hf" / "rejects.jsonl.gz")}
    assert (
        "no such file" in rejects[rows[2]["id"]]["reason"] and rejects[rows[1]["id"]]["stage"] == "export_hf"
    )
    parts = {p.name: p.read_bytes() for p in (tmp_path / "hf" / "data").iterdir()}
    again = export("hf", tmp_path / "cuts.jsonl.gz", tmp_path / "hf", shard_size=2)  # resumes: nothing redone
    run = json.loads((tmp_path / "hf" / "run" / "summary.json").read_text())
    assert run["skipped_shards"] == run["shards"] == 3 and again["exported"] == 4
    assert {p.name: p.read_bytes() for p in (tmp_path / "hf" / "data").iterdir()} == parts

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "osum_data.cli", "export", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )

    bad = cli("parquet", str(tmp_path / "cuts.jsonl.gz"), str(tmp_path / "x"))
    assert bad.returncode == 2 and "invalid choice: 'parquet'" in bad.stderr
    shar = cli("nemo", str(mix / "train"), str(tmp_path / "y"))
    assert shar.returncode == 2 and "is a Lhotse Shar folder" in shar.stderr


# Issue 19: a new export format is one FormatStage, one gather step and one row of the table. Module level,
# so that the Ray workers, which import this module to find the stage, register it too.
@register_stage("export_ids_for_test")
class ExportIds(FormatStage):
    """One line per sample and split: id, task key, target."""

    stage_name = "export_ids_for_test"

    def write_split(self, samples, folder):
        (folder / "ids.tsv").write_text("".join(f"{s.id}\t{s.task}\t{s.target}\n" for s in samples))


def gather_ids(out: Path, shards: int) -> dict[str, int]:
    pieces: dict[str, list[Path]] = {}
    for _, part in part_dirs(out / RUN_DIR, ExportIds.stage_name, shards):
        for split in sorted(p for p in part.iterdir() if p.is_dir()):
            pieces.setdefault(split.name, []).append(split / "ids.tsv")
    return {split: concat_text(files, out / f"{split}.tsv") for split, files in pieces.items()}


def test_a_new_format_is_one_stage_one_gather_and_one_row(mix, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(formats, "FORMATS", dict(formats.FORMATS))  # the row stays in this test
    register_format(
        ExportFormat("ids", "id, task and target per line", lambda job: run_format(
            job, ExportIds, {}, lambda shards: gather_ids(job.out, shards)), shard_size=3)
    )  # fmt: skip
    manifest = mix / "plan" / "train" / "ser" / "ser.jsonl.gz"
    summary = export("ids", manifest, tmp_path / "ids")
    cuts = list(read_jsonl(manifest))
    lines = (tmp_path / "ids" / "train.tsv").read_text().splitlines()
    assert [x.split("\t")[0] for x in lines] == [c["id"] for c in cuts]  # input order, across 3-cut shards
    assert lines[0].split("\t")[2] == cuts[0]["custom"]["target"]
    assert (summary["format"], summary["splits"], summary["rejected"]) == ("ids", {"train": len(cuts)}, 0)
    with pytest.raises(SystemExit):  # the command line reads the same table
        build_parser().parse_args(["export", "--help"])
    assert "id, task and target per line" in capsys.readouterr().out
    monkeypatch.undo()
    assert "ids" not in formats.FORMATS
