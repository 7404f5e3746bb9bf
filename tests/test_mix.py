"""Mixing task manifests into a weighted Lhotse Shar training set with per-task dev/test sets.

Inputs are real ASR pipeline output (recorded speech) turned into samples of other tasks by setting
their label fields (tests/mix_fixtures.py); the mixing, splitting, Shar writing (lhotse's writer,
Ray workers for the audio) and the reading back (lhotse, the bundled trainer's loader) are real.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from lhotse import CutSet

from osum_data.manifest_io import read_jsonl
from osum_data.mix.build import build_mix
from osum_data.mix.config import build_mix_config
from osum_data.mix.plan import MixError
from osum_data.yaml_config import ConfigError
from tests.conftest import REPO
from tests.mix_fixtures import count_tasks, shared_asr, task_manifest


@pytest.fixture(scope="module")
def asr(tmp_path_factory):
    return shared_asr(tmp_path_factory)


@pytest.fixture(scope="module")
def big(asr, tmp_path_factory):
    """Thousands of samples of three tasks (fields only: audio is shared, nothing re-encoded)."""
    d = tmp_path_factory.mktemp("big")
    return {
        "asr": task_manifest(asr, "asr", d / "asr.jsonl.gz", n=3000, speakers=40),
        "ser": task_manifest(asr, "ser", d / "ser.jsonl.gz", n=1500, speakers=20),
        "sgc": task_manifest(asr, "sgc", d / "sgc.jsonl.gz", n=700, speakers=30),
        "sgc2": task_manifest(asr, "sgc", d / "sgc2.jsonl.gz", n=400, speakers=10),
    }


def shar_cuts(folder: Path) -> list[dict]:
    return [d for f in sorted(folder.glob("cuts.*.jsonl.gz")) for d in read_jsonl(f)]


def test_task_weights_are_realised_within_2_percent(big, tmp_path):
    weights = {"asr": 0.2, "ser": 0.5, "sgc": 0.3}  # ser and sgc are repeated, asr subsampled
    raw = {
        "audio": "none",
        "shard_size": 500,
        "tasks": {
            "asr": {"weight": weights["asr"], "datasets": [str(big["asr"])]},
            "ser": {"weight": weights["ser"], "datasets": [str(big["ser"])]},
            "sgc": {
                "weight": weights["sgc"],
                "datasets": [str(big["sgc"]), {"manifest": str(big["sgc2"]), "weight": 0.5}],
            },
        },
    }
    res = build_mix(build_mix_config(raw), tmp_path / "mix", progress=False)
    cuts = shar_cuts(tmp_path / "mix" / "train")
    counts = count_tasks([f for f in sorted((tmp_path / "mix" / "train").glob("cuts.*.jsonl.gz"))])
    n = len(cuts)
    assert n == res.summary["out"] and n > 4000
    for task, w in weights.items():
        assert abs(counts[task] / n / w - 1) <= 0.02, (task, counts[task] / n, w)
    # dataset weights inside a task: sgc2 (weight 0.5) contributes half as often per unique cut
    per_ds = {}
    for d in cuts:
        if d["custom"]["mix"]["task"] == "sgc":
            per_ds[d["custom"]["mix"]["dataset"]] = per_ds.get(d["custom"]["mix"]["dataset"], 0) + 1
    unique = res.summary["tasks"]["sgc"]["datasets"]
    rate = {k: per_ds[k] / unique[k]["unique"]["train"] for k in per_ds}
    assert abs(rate["sgc2"] / rate["sgc"] - 0.5) < 0.02, rate
    # repeated copies get distinct ids, ids are unique and carry their task
    ids = [d["id"] for d in cuts]
    assert len(set(ids)) == len(ids) and any("_repeat1" in i for i in ids)
    assert all(i.startswith(d["custom"]["mix"]["dataset"] + ".") for i, d in zip(ids, cuts, strict=True))
    # the stream is mixed: every Shar shard holds all three tasks
    for f in sorted((tmp_path / "mix" / "train").glob("cuts.*.jsonl.gz"))[:-1]:
        assert set(count_tasks([f])) == {"asr", "ser", "sgc"}


def test_hours_and_temperature(big, tmp_path):
    """unit: hours, temperature T: shares of hours ~ (weight * hours)^(1/T), within 2%."""
    raw = {
        "audio": "none",
        "unit": "hours",
        "temperature": 2.0,
        "tasks": {
            t: {"weight": w, "datasets": [str(big[t])]} for t, w in (("asr", 1), ("ser", 1), ("sgc", 2))
        },
    }
    res = build_mix(build_mix_config(raw), tmp_path / "mix", progress=False)
    hours = {}
    for t in ("asr", "ser", "sgc"):
        plan = tmp_path / "mix" / "plan" / "train" / t / f"{t}.jsonl.gz"
        hours[t] = sum(d["duration"] for d in read_jsonl(plan)) / 3600
    raw_p = {t: (w * hours[t]) ** 0.5 for t, w in (("asr", 1), ("ser", 1), ("sgc", 2))}
    want = {t: v / sum(raw_p.values()) for t, v in raw_p.items()}
    got = {}
    for d in shar_cuts(tmp_path / "mix" / "train"):
        t = d["custom"]["mix"]["task"]
        got[t] = got.get(t, 0.0) + d["duration"]
    total = sum(got.values())
    for t in want:
        assert abs(got[t] / total / want[t] - 1) <= 0.02, (t, got[t] / total, want[t])
        assert res.summary["tasks"][t]["target_share"] == pytest.approx(want[t], rel=1e-4)
    assert total / 3600 == pytest.approx(sum(hours.values()), rel=0.02)  # total: the tasks' own hours


def test_splits_are_speaker_disjoint_and_keep_derived_cuts_together(asr, tmp_path):
    many = task_manifest(asr, "ser", tmp_path / "ser.jsonl.gz", n=600, speakers=15)
    # one speaker only; every second cut an augmented copy derived from the cut before it
    one = tmp_path / "sgc.jsonl.gz"
    rows = list(read_jsonl(task_manifest(asr, "sgc", tmp_path / "sgc-raw.jsonl.gz", n=400, speakers=1)))
    for i in range(1, len(rows), 2):
        rows[i]["custom"]["source_cut_id"] = rows[i - 1]["id"]
    from osum_data.manifest_io import write_jsonl

    write_jsonl(one, rows)
    raw = {
        "audio": "none",
        "splits": {"dev": 0.1, "test": 0.1, "max_cuts": 100},
        "tasks": {"ser": {"datasets": [str(many)]}, "sgc": {"datasets": [str(one)]}},
    }
    res = build_mix(build_mix_config(raw), tmp_path / "mix", progress=False)
    out = tmp_path / "mix"

    def speakers(folder: Path) -> set[str]:
        return {d["supervisions"][0]["speaker"] for d in shar_cuts(folder)}

    train, dev, test = speakers(out / "train"), speakers(out / "dev" / "ser"), speakers(out / "test" / "ser")
    assert dev and test and not (train & dev) and not (train & test) and not (dev & test)
    ser = res.summary["tasks"]["ser"]
    assert ser["speaker_disjoint"] and 30 <= ser["dev_cuts"] <= 100 and 30 <= ser["test_cuts"] <= 100

    sgc = res.summary["tasks"]["sgc"]
    assert not sgc["speaker_disjoint"] and "1 known speaker" in sgc["note"]
    split_of = {}
    for split in ("train", "dev", "test"):
        folder = out / split / ("sgc" if split != "train" else "")
        for d in shar_cuts(folder):
            if d["custom"]["mix"]["task"] == "sgc":
                split_of[d["custom"]["mix"]["source_id"]] = split
    by_id = {r["id"]: r for r in rows}
    for cut_id, split in split_of.items():
        source = by_id[cut_id]["custom"].get("source_cut_id")
        if source in split_of:
            assert split_of[source] == split, (cut_id, source)
    assert sgc["dev_cuts"] > 0 and sgc["test_cuts"] > 0
    # every unique sample is in exactly one split (weights 1: nothing repeated or dropped)
    assert (
        res.summary["unique"]
        == 1000
        == res.summary["out"] + sum(t["dev_cuts"] + t["test_cuts"] for t in res.summary["tasks"].values())
    )


def test_same_seed_same_bytes_other_seed_other_mix(big, tmp_path):
    def mix(seed: int, name: str) -> dict[str, bytes]:
        raw = {
            "seed": seed,
            "audio": "none",
            "shard_size": 300,
            "tasks": {
                "ser": {"datasets": [str(big["ser"])]},
                "sgc": {"weight": 2, "datasets": [str(big["sgc"])]},
            },
        }
        build_mix(build_mix_config(raw), tmp_path / name, progress=False)
        return {
            str(p.relative_to(tmp_path / name)): p.read_bytes() for p in (tmp_path / name).rglob("cuts.*.gz")
        }

    a, b, c = mix(0, "a"), mix(0, "b"), mix(1, "c")
    assert a == b and len(a) > 5
    assert a.keys() != c.keys() or a != c  # another seed: other splits and order
    ids_a = [
        json.loads(x)["id"]
        for k in sorted(a)
        if k.startswith("train")
        for x in gzip.decompress(a[k]).splitlines()
    ]
    ids_c = [
        json.loads(x)["id"]
        for k in sorted(c)
        if k.startswith("train")
        for x in gzip.decompress(c[k]).splitlines()
    ]
    assert ids_a != ids_c


def test_audio_mix_is_shar_that_lhotse_and_the_trainer_read(asr, tmp_path, ray_session):
    manifests = {
        "asr": task_manifest(asr, "asr", tmp_path / "asr.jsonl.gz", n=70, speakers=7),
        "ser": task_manifest(asr, "ser", tmp_path / "ser.jsonl.gz", n=40, speakers=5),
    }
    raw = {
        "audio": "flac",
        "shard_size": 30,
        "splits": {"dev": 0.1, "test": 0.1},
        "tasks": {
            "asr": {"weight": 0.6, "datasets": [str(manifests["asr"])]},
            "ser": {"weight": 0.4, "datasets": [str(manifests["ser"])]},
        },
    }
    cfg = build_mix_config(raw)
    res = build_mix(cfg, tmp_path / "mix2", workers=2, progress=False)
    train = tmp_path / "mix2" / "train"
    assert sorted(p.name for p in train.iterdir())[:2] == ["cuts.000000.jsonl.gz", "cuts.000001.jsonl.gz"]
    sources = {d["id"]: d for p in manifests.values() for d in read_jsonl(p)}
    cuts = CutSet.from_shar(in_dir=train)
    seen = 0
    for cut in cuts:
        audio = cut.load_audio()
        assert cut.sampling_rate == 16000 and audio.shape[0] == 1
        src = CutSet.from_dicts([json.loads(json.dumps(sources[cut.custom["mix"]["source_id"]]))])[0]
        src = src.resample(16000).load_audio()
        assert audio.shape[1] == src.shape[1]
        np.testing.assert_allclose(audio, src, atol=1.01 / 32768)  # 16-bit FLAC: lossless after quantising
        seen += 1
    assert seen == res.summary["out"] > 50
    for folder in (tmp_path / "mix2" / "dev").iterdir():
        assert all(c.load_audio().size for c in CutSet.from_shar(in_dir=folder))

    # the bundled trainer reads the Shar folder as it is
    from training.config import DataConfig, load_config
    from training.data import make_loader, open_cuts
    from training.sequence import PromptFormat
    from training.weights import load_tokenizer

    fmt = PromptFormat(
        load_tokenizer(load_config(REPO / "training" / "configs" / "tiny.yaml").model.llm.tokenizer)
    )
    loader = make_loader(
        open_cuts(train),
        fmt,
        DataConfig(max_duration=60.0, num_workers=0, bucketing=False),
        seed=0,
        train=False,
        epochs=1,
    )
    batches = list(loader)
    assert sorted(i for b in batches for i in b["ids"]) == sorted(c.id for c in cuts)
    assert batches[0]["mel"].shape[1] == 80

    # the same mix with one worker: the same bytes
    build_mix(cfg, tmp_path / "mix1", workers=1, progress=False)
    for p in sorted((tmp_path / "mix2").rglob("*.tar")) + sorted(
        (tmp_path / "mix2").rglob("cuts.*.jsonl.gz")
    ):
        if "/run/" not in str(p):
            assert p.read_bytes() == (tmp_path / "mix1" / p.relative_to(tmp_path / "mix2")).read_bytes(), p


def test_bad_lines_are_rejected_with_reasons_and_counted(asr, tmp_path):
    good = list(read_jsonl(task_manifest(asr, "ser", tmp_path / "ser.jsonl.gz", n=30)))
    untemplated = dict(good[1], id="plain", custom={})
    wrong = json.loads(json.dumps(good[2]))
    wrong["id"], wrong["custom"]["task"] = "wrong", "<TRANSCRIBE> <GENDER>"
    path = tmp_path / "dirty.jsonl"
    lines = [json.dumps(d).encode() for d in good] + [b"{not json", json.dumps(untemplated).encode()]
    lines += [json.dumps(wrong).encode(), b'{"id": "latin1-\xe9"}']
    path.write_bytes(b"\n".join(lines) + b"\n")
    res = build_mix(
        build_mix_config({"audio": "none", "tasks": {"ser": {"datasets": [str(path)]}}}),
        tmp_path / "m",
        progress=False,
    )
    s = res.summary
    assert s["in"] == 34 == s["unique"] + s["rejected"] and s["rejected"] == 4
    assert s["rejected_by_reason"] == {
        "scan:bad_json": 1,
        "scan:not_a_task_sample": 1,
        "scan:not_utf8": 1,
        "scan:wrong_task": 1,
    }
    rejects = {r["id"]: r["custom"]["reject"] for r in read_jsonl(tmp_path / "m" / "rejects.jsonl.gz")}
    assert (
        rejects["wrong"]["code"] == "wrong_task"
        and "not a sample of task 'ser'" in rejects["wrong"]["reason"]
    )
    assert "dirty.jsonl:31: not JSON" in rejects["dirty-line-31"]["reason"]
    assert "dirty.jsonl:34: not UTF-8" in rejects["dirty-line-34"]["reason"]
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(gzip.compress(path.read_bytes())[:-30])
    with pytest.raises(MixError, match=r"manifest .*cut\.jsonl\.gz is truncated") as e:
        build_mix(
            build_mix_config({"tasks": {"ser": {"datasets": [str(truncated)]}}}),
            tmp_path / "t",
            progress=False,
        )
    assert e.value.exit_code == 1  # the data failed, not the config (issue 19: was a usage error)
    assert rejects["plain"]["code"] == "not_a_task_sample"


def test_one_manifest_feeding_two_tasks(asr, tmp_path):
    """A pipeline that writes samples of two task keys: each task takes its own, none is a reject."""
    sgc = list(read_jsonl(task_manifest(asr, "sgc", tmp_path / "sgc.jsonl.gz", n=30)))
    ser = list(read_jsonl(task_manifest(asr, "ser", tmp_path / "ser.jsonl.gz", n=20)))
    both = tmp_path / "both.jsonl.gz"
    from osum_data.manifest_io import write_jsonl

    write_jsonl(both, [x for pair in zip(sgc, ser, strict=False) for x in pair] + sgc[20:])
    raw = {
        "audio": "none",
        "splits": {"dev": 0, "test": 0},
        "tasks": {
            "sgc": {"datasets": [{"name": "both-sgc", "manifest": str(both)}]},
            "ser": {"datasets": [{"name": "both-ser", "manifest": str(both)}]},
        },
    }
    res = build_mix(build_mix_config(raw), tmp_path / "m", progress=False)
    s = res.summary
    assert s["rejected"] == 0 and s["in"] == 50 == s["unique"]
    assert s["cuts_by_task"] == {"ser": 25, "sgc": 25}  # equal weights, realised by repetition
    assert s["tasks"]["sgc"]["datasets"]["both-sgc"]["samples_of_other_tasks"] == 20


def test_config_and_input_errors_are_one_line(asr, tmp_path):
    with pytest.raises(ConfigError, match="tasks=.*: unknown task 'mood'"):
        build_mix_config({"tasks": {"mood": {"datasets": ["x"]}}})
    with pytest.raises(ConfigError, match="tasks.asr.weight=-1: .*greater than or equal to 0"):
        build_mix_config({"tasks": {"asr": {"weight": -1, "datasets": ["x"]}}})
    with pytest.raises(ConfigError, match="unknown key 'weigths'"):
        build_mix_config({"weigths": 1, "tasks": {"asr": {"datasets": ["x"]}}})
    with pytest.raises(MixError, match="manifest not found: .*nope.jsonl.gz"):
        build_mix(
            build_mix_config({"tasks": {"asr": {"datasets": [str(tmp_path / "nope.jsonl.gz")]}}}),
            tmp_path / "o",
            progress=False,
        )
    dup = tmp_path / "dup.jsonl"
    line = next(iter(read_jsonl(asr)))
    dup.write_text(json.dumps(line) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(MixError, match="1 cut id.s. occur more than once"):
        build_mix(
            build_mix_config({"tasks": {"asr": {"datasets": [str(dup)]}}}), tmp_path / "o", progress=False
        )


def test_cli_mix_with_overrides_and_a_usage_error(asr, tmp_path):
    manifest = task_manifest(asr, "sgc", tmp_path / "sgc.jsonl.gz", n=200, speakers=10)
    mix_yaml = tmp_path / "mix.yaml"
    mix_yaml.write_text(f"audio: none\ntasks:\n  sgc:\n    datasets: [{manifest}]\n")
    cmd = [
        sys.executable,
        "-m",
        "osum_data.cli",
        "mix",
        str(mix_yaml),
        "--output",
        str(tmp_path / "out"),
        "--set",
        "splits.dev=0.1",
        "--set",
        "shard_size=50",
        "--no-progress",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "sgc: share 1.0000 (target 1.0000)" in proc.stdout and "speaker-disjoint" in proc.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["tasks"]["sgc"]["dev_cuts"] >= 15 and summary["shar_shards"]["train"] == 4
    bad = subprocess.run(
        cmd[:5] + ["--output", str(tmp_path / "o2"), "--set", "tasks.sgc.weight=-2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "tasks.sgc.weight" in bad.stderr


# --- fast checks on synthetic task samples (fields only: no audio is read with `audio: none`) ----------

KEYS = {"asr": ("<TRANSCRIBE>", "hello there"), "ser": ("<TRANSCRIBE> <EMOTION>", "hello there<HAPPY>")}


def samples(path: Path, task: str, n: int, speakers: int | None = 3, prefix: str = "c") -> Path:
    """`n` templated samples of `task` (a fake recording: fields-only mixes never open it)."""
    key, target = KEYS[task]
    rows = []
    for i in range(n):
        cid = f"{prefix}{i:05d}"
        spk = f"spk{i % speakers}" if speakers else None
        rows.append(
            {
                "id": cid,
                "start": 0.0,
                "duration": 1.0,
                "channel": 0,
                "supervisions": [
                    {
                        "id": cid,
                        "recording_id": cid,
                        "start": 0.0,
                        "duration": 1.0,
                        "channel": 0,
                        "speaker": spk,
                    }
                ],
                "recording": {
                    "id": cid,
                    "sources": [{"type": "file", "channels": [0], "source": f"/nonexistent/{cid}.wav"}],
                    "sampling_rate": 16000,
                    "num_samples": 16000,
                    "duration": 1.0,
                },
                "custom": {"task": key, "target": target, "instruction": "Say it."},
                "type": "MonoCut",
            }
        )
    from osum_data.manifest_io import write_jsonl

    write_jsonl(path, rows)
    return path


def test_numbers_are_finite_and_bounded_at_validation(tmp_path):
    """Defect 13/6: inf/nan weights, totals and temperatures, and a runaway total, name their key."""
    base = {"tasks": {"asr": {"datasets": ["x"]}}}
    cases = {
        "tasks.asr.weight": {"tasks": {"asr": {"weight": float("inf"), "datasets": ["x"]}}},
        "tasks.asr.datasets.0.weight": {
            "tasks": {"asr": {"datasets": [{"manifest": "x", "weight": float("nan")}]}}
        },
        "total": {**base, "total": float("inf")},
        "temperature": {**base, "temperature": float("nan")},
    }
    for key, raw in cases.items():
        with pytest.raises(ConfigError, match=rf": {key}=(inf|nan): Input should be a finite number"):
            build_mix_config(raw)
    with pytest.raises(
        ConfigError, match=r"total=1000000000000\.0: Input should be less than or equal to 1e?0+"
    ):
        build_mix_config({**base, "total": 1e12})


def test_extreme_weights_and_temperature_give_finite_shares(tmp_path):
    """Defect 13: task weights of 1e308 (sum overflows) and temperature 0.001 (power overflows)."""
    asr, ser = samples(tmp_path / "asr.jsonl", "asr", 20), samples(tmp_path / "ser.jsonl", "ser", 10)
    raw = {
        "audio": "none",
        "splits": {"dev": 0, "test": 0},
        "tasks": {
            "asr": {"weight": 1e308, "datasets": [str(asr)]},
            "ser": {"weight": 1e308, "datasets": [str(ser)]},
        },
    }
    s = build_mix(build_mix_config(raw), tmp_path / "big", progress=False).summary
    assert s["tasks"]["asr"]["target_share"] == s["tasks"]["ser"]["target_share"] == 0.5
    assert s["cuts_by_task"] == {"asr": 15, "ser": 15}
    raw["tasks"]["asr"]["weight"] = raw["tasks"]["ser"]["weight"] = 1
    s = build_mix(build_mix_config({**raw, "temperature": 0.001}), tmp_path / "cold", progress=False).summary
    assert s["tasks"]["asr"]["target_share"] == 1.0 and s["cuts_by_task"] == {"asr": 30}


def test_runaway_repeats_are_refused_before_writing(tmp_path):
    """Defect 6: a dataset weight of 1e6 on 20 cuts would write 2e7 cuts: refused with the numbers."""
    asr = samples(tmp_path / "asr.jsonl", "asr", 20)
    raw = {
        "audio": "none",
        "splits": {"dev": 0, "test": 0},
        "tasks": {"asr": {"datasets": [{"manifest": str(asr), "weight": 1e6}]}},
    }
    with pytest.raises(
        MixError,
        match=r"dataset 'asr' would repeat its 20 training cut\(s\) 1e\+06 times \(at most 1000\); "
        r"lower tasks\.asr\.datasets\.0\.weight \(1e\+06\)",
    ):
        build_mix(build_mix_config(raw), tmp_path / "o", progress=False)
    assert not (tmp_path / "o" / "plan" / "train").exists()
    raw["tasks"]["asr"]["datasets"][0]["weight"] = 1
    with pytest.raises(MixError, match=r"lower total \(1e\+06\) or tasks\.asr\.datasets\.0\.weight"):
        build_mix(build_mix_config({**raw, "total": 1e6}), tmp_path / "o", progress=False)


def test_no_training_cuts_left_says_why(tmp_path):
    """Defect 19: per dataset, lines read, rejected by main reason, and where the rejects are."""
    junk = tmp_path / "junk.jsonl"
    junk.write_text("{not json\n" + json.dumps({"id": "x", "duration": 1.0, "custom": {}}) + "\n{oops\n")
    ser = samples(tmp_path / "ser.jsonl", "ser", 10)
    raw = {"audio": "none", "tasks": {"asr": {"datasets": [str(junk)]}, "ser": {"datasets": [str(ser)]}}}
    out = tmp_path / "o"
    with pytest.raises(MixError) as e:
        build_mix(build_mix_config(raw), out, progress=False)
    msg = str(e.value)
    assert "task 'asr' has no training cuts left ('junk': 3 line(s), 3 rejected (most: bad_json 2))" in msg
    assert f"rejects with their reasons: {out / 'rejects.jsonl.gz'}" in msg and "\n" not in msg


def test_mix_yaml_duplicates_typos_and_cross_field_locations(tmp_path):
    """Defect 20: a key given twice, `manifestt:`, and errors between fields name where they are."""
    from osum_data.mix.config import load_mix_config

    def error(text: str) -> str:
        path = tmp_path / "mix.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError) as e:
            load_mix_config(path)
        return str(e.value)

    assert error("tasks:\n  asr: {datasets: [a]}\n  asr: {datasets: [b]}\n").endswith(
        "mix.yaml: line 3: key 'asr' given twice (first on line 2)"
    )
    assert "unknown key 'tasks.asr.datasets.0.manifestt'; known keys: name, manifest, weight" in error(
        "tasks:\n  asr:\n    datasets:\n      - {manifestt: a}\n"
    )
    assert ": tasks: every task has weight 0" in error("tasks:\n  asr: {weight: 0, datasets: [a]}\n")
    msg = error(
        "tasks:\n  asr: {datasets: [{name: d, manifest: a}]}\n  ser: {datasets: [{name: d, manifest: b}]}\n"
    )
    assert ": tasks.ser.datasets.0.name: two datasets named 'd' (the other is tasks.asr.datasets.0)" in msg
    assert "?" not in msg


def test_max_cuts_holds_with_speaker_disjoint_splits(tmp_path):
    """Defect 27: whole speakers are held out while they fit under max_cuts, then it stops; cuts
    without a speaker never push a split over; a speaker larger than max_cuts is named in the note."""
    many = samples(tmp_path / "asr.jsonl", "asr", 300, speakers=40)  # 7-8 cuts per speaker
    nobody = samples(tmp_path / "asr2.jsonl", "asr", 200, speakers=None, prefix="u")
    raw = {
        "audio": "none",
        "splits": {"dev": 0.2, "test": 0.2, "max_cuts": 20, "min_speakers": 2},
        "tasks": {"asr": {"datasets": [str(many), str(nobody)]}},
    }
    s = build_mix(build_mix_config(raw), tmp_path / "a", progress=False).summary["tasks"]["asr"]
    assert s["speaker_disjoint"] and 0 < s["dev_cuts"] <= 20 and 0 < s["test_cuts"] <= 20
    assert s["train_cuts"] + s["dev_cuts"] + s["test_cuts"] == 500
    big = samples(tmp_path / "ser.jsonl", "ser", 12, speakers=3)  # 4 cuts per speaker
    raw = {
        "audio": "none",
        "splits": {"dev": 0.3, "test": 0.3, "max_cuts": 2, "min_speakers": 2},
        "tasks": {"ser": {"datasets": [str(big)]}},
    }
    s = build_mix(build_mix_config(raw), tmp_path / "b", progress=False).summary["tasks"]["ser"]
    assert s["dev_cuts"] == s["test_cuts"] == 0 and s["train_cuts"] == 12
    assert "dev holds 0 of 2 wanted cuts and test holds 0 of 2 wanted cuts" in s["note"]
    assert "splits.max_cuts=2 is below the smallest group's 4 cuts" in s["note"]
    assert s["split_short"]["dev"].startswith("dev holds 0 of 2 wanted cuts: splits.max_cuts=2")


def test_mix_refuses_an_output_over_its_inputs(tmp_path):
    """Defect 1: --output the input's run folder (or a folder holding it): one line, nothing touched."""
    run = tmp_path / "run"
    run.mkdir()
    samples(run / "cuts.jsonl.gz", "asr", 10)
    (run / "summary.json").write_text("{}")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    cfg = build_mix_config({"audio": "none", "tasks": {"asr": {"datasets": [str(run)]}}})
    for out in (run, tmp_path):
        with pytest.raises(
            MixError, match=rf"--output {out} is \(or holds\) {run}, the folder of task 'asr'"
        ):
            build_mix(cfg, out, progress=False)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


# --- one grouping for all tasks: the leak shapes of issue 16, on real cuts ----------------------------


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """Task manifests in the shapes of the leaks found in the demo mix (tests/lineage_fixtures.py):
    VED composites of prompts with real event clips + the clips as X-only caption samples; the same
    prompts as ASR utterances; segments of a long recording joined from prompts that are also ASR
    utterances; SER and SGC samples with one (invented) speaker id in both tasks."""
    from osum_data.label.longform.segments import Segment, segment_cut
    from tests import lineage_fixtures as lf

    d = tmp_path_factory.mktemp("shapes")
    events = lf.event_clips(d / "events", limit=12)
    clips = list(CutSet.from_file(events))
    speech = lf.prompt_cuts(lf.sentence_prompts(10))
    comps = lf.composites(speech, events, d / "ved-run")
    long_cut = lf.joined_long_cut(d / "long", n_prompts=4)
    pieces = json.loads((d / "long" / "reference.json").read_text())
    segments = [segment_cut(long_cut, Segment(p["start"] - 0.1, p["end"] + 0.1), "vad") for p in pieces]
    for seg, p in zip(segments, pieces, strict=True):
        seg.supervisions[0].text = p["text"]
    joined = lf.prompt_cuts([p["name"] for p in pieces])
    others = lf.prompt_cuts(lf.sentence_prompts(24, skip=10))
    paths = {
        "ved": lf.samples(comps + clips, "ved", d / "ved.jsonl.gz"),
        "asr": lf.samples(speech + joined + others[:6], "asr", d / "asr.jsonl.gz"),
        "longform": lf.samples(segments, "asr", d / "longform.jsonl.gz"),
        "sgc": lf.samples(others[6:15], "sgc", d / "sgc.jsonl.gz", speakers=["A", "B", "C"], gender=True),
        "sgc2": lf.samples(others[15:24], "sgc", d / "sgc2.jsonl.gz", speakers=["A", "D", "E"], gender=True),
        # the case: prompts of the one-voice ASR corpus also in speaker-disjoint SGC
        "sgc3": lf.samples(speech[:3], "sgc", d / "sgc3.jsonl.gz", gender=True),
    }
    return {"paths": paths, "comps": comps, "clips": clips, "segments": segments, "pieces": pieces}


def _splits_of(mix: Path) -> dict[tuple[str, str], str]:
    """(dataset, source id) -> split, from the mix's plan manifests."""
    out = {}
    for f in (mix / "plan").glob("*/*/*.jsonl.gz"):
        for d in read_jsonl(f):
            m = d["custom"]["mix"]
            out[(m["dataset"], m["source_id"])] = m["split"]
    return out


def _shape_mix(shapes, out: Path):
    p = shapes["paths"]
    raw = {
        "audio": "none",
        "seed": 3,
        "splits": {"dev": 0.2, "test": 0.2, "min_speakers": 3},
        "tasks": {
            "asr": {"datasets": [str(p["asr"]), str(p["longform"])]},
            "ved": {"datasets": [str(p["ved"])]},
            "sgc": {"datasets": [str(p["sgc"]), str(p["sgc2"]), str(p["sgc3"])]},
        },
    }
    return build_mix(build_mix_config(raw), out, progress=False)


def _crossed(mix: Path, out: Path, moves: dict[tuple[str, str], str]) -> Path:
    """The mix's cuts written as a mix folder again, with the given (dataset, source id) cuts moved to
    another split: the layout per-task splitting produced (old code), to show the audit sees it."""
    from osum_data.manifest_io import write_jsonl

    groups: dict[str, list[dict]] = {}
    for f in sorted((mix / "plan").glob("*/*/*.jsonl.gz")):
        for d in read_jsonl(f):
            m = d["custom"]["mix"]
            split = moves.get((m["dataset"], m["source_id"]), m["split"])
            m["split"] = split
            groups.setdefault("train" if split == "train" else f"{split}/{m['task']}", []).append(d)
    for g, rows in groups.items():
        write_jsonl(out / g / "cuts.000000.jsonl.gz", rows)
    (out / "summary.json").write_text(json.dumps({"type": "mix", "tasks": {}}))
    return out


def test_nothing_shared_crosses_train_and_dev_test_in_any_task(shapes, tmp_path):
    """Issue 16/1: composites and their event clips, one recording in two tasks, long-form segments
    and the utterances they are, one speaker in two datasets: each pair on one side of the line; the
    audit of the mix is clean. Moving one of each pair across (what per-task splits did) fails it."""
    res = _shape_mix(shapes, tmp_path / "mix")
    split = _splits_of(tmp_path / "mix")
    assert res.audit is not None and not res.audit.failed, res.audit.table()
    rows = {(r["check"], r["task"]): r for r in res.audit.rows}
    assert all(rows[("leak:lineage", t)]["status"] == "ok" for t in ("asr", "ved", "sgc")), res.audit.table()
    assert rows[("leak:speaker", "sgc")]["status"] == "ok"
    # allison (the only voice of ASR and VED) cannot be held out: declared, reported, not a failure
    assert res.summary["speakers_not_held_out"] == ["allison"]
    assert rows[("leak:speaker", "asr")]["status"] == "warn" and rows[("leak:speaker", "asr")]["count"] == 0
    held = {k for k, v in split.items() if v != "train"}
    assert held, "the grouping left nothing to hold out"
    # shape 1: a composite and the caption sample of its clip
    pairs = [(("ved", c.id), ("ved", c.custom["composite"]["event_cut_id"])) for c in shapes["comps"]]
    # shape 2: the recording of a composite is an ASR utterance
    pairs += [(("ved", c.id), ("asr", c.custom["composite"]["speech_cut_id"])) for c in shapes["comps"]]
    # shape 3: a long-form segment and the ASR utterance of the prompt it is
    pairs += [
        (("longform", s.id), ("asr", f"asterisk_{p['name'].replace('/', '_')}"))
        for s, p in zip(shapes["segments"], shapes["pieces"], strict=True)
    ]
    for a, b in pairs:
        assert split[a] == split[b], (a, split[a], b, split[b])
    # shape 4: speaker A in two datasets of SGC (and in no other split)
    a_splits = {
        split[(ds, d["id"])]
        for ds in ("sgc", "sgc2")
        for d in read_jsonl(shapes["paths"][ds])
        if d["supervisions"][0]["speaker"] == "A"
    }
    assert len(a_splits) == 1
    # allison speaks in SGC (speaker-disjoint) and is the only voice of ASR and VED: her SGC cuts, and
    # with them their recordings in every task, stay in train
    for d in read_jsonl(shapes["paths"]["sgc3"]):
        assert split[("sgc3", d["id"])] == split[("asr", d["id"])] == "train"
    # the same shapes crossed: the audit fails, naming the check and the tasks
    comp = shapes["comps"][0]
    cases = {
        "composite/caption": (("ved", comp.custom["composite"]["event_cut_id"]), "ved"),
        "same recording, two tasks": (("asr", comp.custom["composite"]["speech_cut_id"]), "asr"),
        "segment/utterance": (pairs[-1][1], "asr"),
    }
    for name, (key, task) in cases.items():
        assert key[0] == task
        other = "test" if split[key] == "train" else "train"
        crossed = _crossed(
            tmp_path / "mix", tmp_path / name.replace("/", "-").replace(" ", "_"), {key: other}
        )
        from osum_data.audit import audit

        result = audit(crossed)
        assert result.failed, name
        assert any(r["check"] == "leak:lineage" and r["status"] == "fail" for r in result.rows), name
    speaker_a = [
        ("sgc", d["id"]) for d in read_jsonl(shapes["paths"]["sgc"]) if d["supervisions"][0]["speaker"] == "A"
    ]
    target = "test" if split[speaker_a[0]] == "train" else "train"
    from osum_data.audit import audit

    result = audit(_crossed(tmp_path / "mix", tmp_path / "speaker", {speaker_a[0]: target}))
    assert any(r["check"] == "leak:speaker" and r["status"] == "fail" for r in result.rows)


def test_a_task_that_cannot_fill_dev_test_says_so_and_does_not_leak(shapes, tmp_path):
    """Every ASR utterance is also inside a VED composite whose clips join them all: ASR cannot get a
    dev/test set without leaking, and says so by name instead of filling it."""
    p = shapes["paths"]
    rows = [d for d in read_jsonl(p["ved"])]
    one_clip = tmp_path / "ved.jsonl.gz"
    from osum_data.manifest_io import write_jsonl

    clip = rows[0]["custom"].get("composite", {}).get("event_cut_id")
    for d in rows:  # every composite holds the same clip: one group
        if d["custom"].get("composite"):
            d["custom"]["composite"]["event_cut_id"] = clip
    write_jsonl(one_clip, [d for d in rows if d["custom"].get("composite")])
    asr = tmp_path / "asr.jsonl.gz"
    speech_ids = {d["custom"]["composite"]["speech_cut_id"] for d in rows if d["custom"].get("composite")}
    write_jsonl(asr, [d for d in read_jsonl(p["asr"]) if d["id"] in speech_ids])
    raw = {
        "audio": "none",
        "splits": {"dev": 0.2, "test": 0.2},
        "tasks": {"asr": {"datasets": [str(asr)]}, "ved": {"datasets": [str(one_clip)]}},
    }
    res = build_mix(build_mix_config(raw), tmp_path / "m", progress=False)
    t = res.summary["tasks"]["asr"]
    assert t["dev_cuts"] == t["test_cuts"] == 0 and t["groups"] == 1
    assert t["split_short"]["test"].startswith("test holds 0 of 2 wanted cuts")
    assert "nothing is moved across" in t["note"] and not res.audit.failed


def test_exact_duplicates_across_runs_are_dropped_and_counted(tmp_path):
    """Issue 16/2: the SAP run is byte-identical to SGC's TTS part (same ids, targets and augmented
    audio in two run folders): the mix keeps the first, counts the second, `unique` means unique."""
    from tests import lineage_fixtures as lf

    speech = lf.prompt_cuts(lf.sentence_prompts(8))
    runs = {}
    for name in ("sgc", "sap"):
        made = lf.augmented(speech, tmp_path / f"{name}-run")
        runs[name] = lf.samples(
            made, "sgc", tmp_path / f"{name}.jsonl.gz", speakers=["a", "b", "c", "d"], gender=True
        )
    a, b = list(read_jsonl(runs["sgc"])), list(read_jsonl(runs["sap"]))
    assert [d["id"] for d in a] == [d["id"] for d in b] and len(a) == 16
    assert a[1]["recording"]["sources"] != b[1]["recording"]["sources"]  # two files, the same audio
    raw = {
        "audio": "none",
        "splits": {"dev": 0.1, "test": 0.1},
        "tasks": {
            "sgc": {
                "datasets": [
                    {"name": "sgc-sgc", "manifest": str(runs["sgc"])},
                    {"name": "sap", "manifest": str(runs["sap"])},
                ]
            }
        },
    }
    res = build_mix(build_mix_config(raw), tmp_path / "m", progress=False)
    s = res.summary
    assert s["unique"] == 16 and s["duplicates"]["removed"] == 16
    assert s["duplicates"]["by_dataset"] == {"sap": 16} and s["rejected"] == 0
    assert s["in"] == s["unique"] + s["duplicates"]["removed"] + s["rejected"] == 32
    assert s["tasks"]["sgc"]["datasets"]["sap"]["unique"] == {"train": 0, "dev": 0, "test": 0}
    assert s["out"] + sum(t["dev_cuts"] + t["test_cuts"] for t in s["tasks"].values()) == 16
    rejects = [r for r in read_jsonl(tmp_path / "m" / "duplicates.jsonl.gz")]
    assert len(rejects) == 16 and all(r["custom"]["reject"]["code"] == "duplicate" for r in rejects)
    assert "as a cut of dataset 'sgc-sgc' (kept)" in rejects[0]["custom"]["reject"]["reason"]
    assert all(r["status"] == "ok" for r in res.audit.rows if r["check"] == "duplicates")


def test_the_same_corpus_in_another_folder_splits_the_same_way(tmp_path):
    """File paths link cuts (one file imported twice) but never draw a split: moving the corpus keeps
    every cut's split (the seed and the ids decide)."""
    a = samples(tmp_path / "a.jsonl", "asr", 200, speakers=None)
    rows = list(read_jsonl(a))
    for d in rows:
        d["recording"]["sources"][0]["source"] = d["recording"]["sources"][0]["source"].replace(
            "/nonexistent/", "/elsewhere/corpus/"
        )
    from osum_data.manifest_io import write_jsonl

    b = write_jsonl(tmp_path / "b.jsonl", rows) and tmp_path / "b.jsonl"
    splits = []
    for path in (a, b):
        raw = {
            "audio": "none",
            "splits": {"dev": 0.1, "test": 0.1},
            "tasks": {"asr": {"datasets": [str(path)]}},
        }
        out = tmp_path / path.stem
        build_mix(build_mix_config({**raw}), out, progress=False)
        splits.append({k[1]: v for k, v in _splits_of(out).items()})
    assert splits[0] == splits[1] and set(splits[0].values()) == {"train", "dev", "test"}
