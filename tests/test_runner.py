"""The Ray runner on real audio: rejects with reasons, exact accounting, determinism, resume."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import psutil
import pytest
from lhotse import CutSet, Recording, SupervisionSegment

from osum_data.manifest_io import read_jsonl, write_jsonl
from osum_data.run.config import ConfigError, build_config, load_pipeline
from osum_data.run.runner import run_pipeline
from tests.conftest import REPO, TESTS, speech

ASR = REPO / "pipelines" / "asr.yaml"


def cut_dict(path: Path, text: str, cut_id: str, **sup) -> dict:
    rec = Recording.from_file(path, recording_id=cut_id)
    cut = rec.to_cut()
    cut.id = cut_id
    cut.supervisions = [
        SupervisionSegment(
            id=cut_id, recording_id=rec.id, start=0, duration=rec.duration, text=text, language="en", **sup
        )
    ]
    return cut.to_dict()


def ids_in(path: Path) -> list[str]:
    return [d["id"] for d in read_jsonl(path)]


@pytest.fixture
def bad_inputs(tmp_path, write_wav):
    """Every kind of bad input next to good ones; files are corrupted after import, as happens
    when a corpus changes under a manifest."""
    audio16, text = speech("activated", 16000)
    audio8, _ = speech("activated", 8000)
    audio44, _ = speech("activated", 44100)
    items = []
    good = write_wav("good.wav", audio16, 16000)
    items.append(cut_dict(good, text, "good"))
    trunc = write_wav("trunc.wav", audio16, 16000)
    items.append(cut_dict(trunc, text, "truncated"))
    raw = trunc.read_bytes()
    trunc.write_bytes(raw[: len(raw) // 2])
    zero = write_wav("zero.wav", np.zeros(0, dtype=np.float32), 16000)
    items.append(cut_dict(zero, text, "zero_length"))
    gone = write_wav("gone.wav", audio16, 16000)
    items.append(cut_dict(gone, text, "missing_file"))
    gone.unlink()
    notaudio = write_wav("notaudio.wav", audio16, 16000)
    items.append(cut_dict(notaudio, text, "not_audio"))
    notaudio.write_text("this is a text file, not audio\n" * 200)
    nan = audio16.copy()
    nan[1000:1010] = np.nan
    items.append(cut_dict(write_wav("nan.wav", nan, 16000, subtype="FLOAT"), text, "nan_samples"))
    items.append(cut_dict(write_wav("stereo.wav", np.stack([audio16, audio16], 1), 16000), text, "stereo"))
    items.append(cut_dict(write_wav("rate8k.wav", audio8, 8000), text, "rate_8k"))
    items.append(cut_dict(write_wav("rate44k.wav", audio44, 44100), text, "rate_44k"))
    items.append(cut_dict(good, "hello <unk> world", "angle_brackets"))
    items.append(cut_dict(good, "   ", "empty_transcript"))
    items.append(cut_dict(good, "Cr?me br?l?e, please", "encoding_defect"))
    manifest = tmp_path / "in.jsonl.gz"
    write_jsonl(manifest, items)
    return manifest


EXPECTED_REJECTS = {
    "truncated": "check_audio:truncated_audio",
    "zero_length": "filter_duration:too_short",
    "missing_file": "check_audio:missing_file",
    "not_audio": "check_audio:unreadable_audio",
    "nan_samples": "check_audio:non_finite_samples",
    "stereo": "audio_policy:multi_channel",
    "rate_8k": "audio_policy:low_sampling_rate",
    "angle_brackets": "normalize_text:angle_brackets",
    "empty_transcript": "normalize_text:empty_transcript",
    "encoding_defect": "normalize_text:encoding_defect",
}


def test_bad_inputs_end_in_rejects_with_reasons(bad_inputs, tmp_path, ray_session):
    out = tmp_path / "out"
    res = run_pipeline(load_pipeline(ASR), bad_inputs, out, workers=2, progress=False)
    s = res.summary
    assert s["in"] == 12 and s["in"] == s["out"] + s["rejected"]
    rejects = {d["id"]: d["custom"]["reject"] for d in read_jsonl(out / "rejects.jsonl.gz")}
    got = {k: f"{v['stage']}:{v['code']}" for k, v in rejects.items()}
    assert got == EXPECTED_REJECTS
    assert all(v["reason"] for v in rejects.values())
    assert "gone.wav does not exist" in rejects["missing_file"]["reason"]
    assert "declares" in rejects["truncated"]["reason"]
    assert sum(s["rejected_by_reason"].values()) == s["rejected"]
    kept = {c.id: c for c in CutSet.from_file(out / "cuts.jsonl.gz")}
    assert set(kept) == {"good", "rate_44k"}
    # 44.1 kHz is resampled (lazily) to the 16 kHz policy, and decodes at 16 kHz.
    c44 = kept["rate_44k"]
    assert c44.sampling_rate == 16000 and c44.custom["source_sampling_rate"] == 44100
    assert abs(c44.load_audio().shape[1] - kept["good"].num_samples) <= 16
    for c in kept.values():
        assert c.custom["task"] == "<TRANSCRIBE>" and c.custom["target"] == c.supervisions[0].text
        assert c.custom["instruction"]


def test_policy_overrides_keep_8k_and_first_channel_of_stereo(bad_inputs, tmp_path, ray_session):
    cfg = load_pipeline(ASR, ["audio_policy.min_sampling_rate=8000", "audio_policy.channels=first"])
    res = run_pipeline(cfg, bad_inputs, tmp_path / "out", workers=1, progress=False)
    kept = {c.id: c for c in CutSet.from_file(tmp_path / "out" / "cuts.jsonl.gz")}
    assert {"rate_8k", "stereo", "good"} <= set(kept)
    assert kept["stereo"].load_audio().shape[0] == 1
    assert kept["rate_8k"].sampling_rate == 16000
    assert res.summary["in"] == res.summary["out"] + res.summary["rejected"]


def demo_like_manifest(tmp_path: Path, n: int) -> Path:
    """n cuts over 40 real prompts (ids distinct, audio shared), some with bad transcripts."""
    from osum_data.demo import SOUNDS_DIR, asterisk_transcripts, write_cycled_manifest

    names = [k for k in sorted(asterisk_transcripts()) if "/" not in k and (SOUNDS_DIR / f"{k}.wav").exists()]
    return write_cycled_manifest(tmp_path / f"in{n}.jsonl.gz", n, names[:40])


def test_output_is_byte_identical_for_1_and_2_workers(tmp_path, ray_session):
    manifest = demo_like_manifest(tmp_path, 160)
    cfg = load_pipeline(ASR, ["shard_size=16", "audio_policy.min_sampling_rate=8000"])
    a = run_pipeline(cfg, manifest, tmp_path / "w1", workers=1, progress=False)
    b = run_pipeline(cfg, manifest, tmp_path / "w2", workers=2, progress=False)
    for name in ("cuts.jsonl.gz", "rejects.jsonl.gz"):
        assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes()
    assert a.summary["out"] > 100 and a.summary["rejected"] > 0
    # Every input id ends in exactly one of output or rejects.
    out_ids = ids_in(tmp_path / "w1" / "cuts.jsonl.gz") + ids_in(tmp_path / "w1" / "rejects.jsonl.gz")
    assert sorted(out_ids) == sorted(ids_in(manifest))
    assert b.summary["skipped_shards"] == 0
    # Same config and input again: every shard is skipped, output unchanged.
    again = run_pipeline(cfg, manifest, tmp_path / "w1", workers=2, progress=False)
    assert again.summary["skipped_shards"] == a.summary["shards"] == 10
    assert (tmp_path / "w1" / "cuts.jsonl.gz").read_bytes() == (
        tmp_path / "w2" / "cuts.jsonl.gz"
    ).read_bytes()
    # The merged manifests are valid lhotse manifests.
    from lhotse.qa import validate

    validate(CutSet.from_file(tmp_path / "w1" / "cuts.jsonl.gz"), read_data=False)


def test_a_crashing_stage_rejects_only_the_bad_cut(tmp_path, ray_session):
    manifest = demo_like_manifest(tmp_path, 8)
    items = list(read_jsonl(manifest))
    items[3]["supervisions"][0]["text"] = 12345  # makes the cps filter raise AttributeError
    write_jsonl(manifest, items)
    cfg = build_config({"stages": [{"stage": "filter_cps"}]})
    res = run_pipeline(cfg, manifest, tmp_path / "out", workers=1, progress=False)
    assert (res.summary["out"], res.summary["rejected"]) == (7, 1)
    rej = next(read_jsonl(tmp_path / "out" / "rejects.jsonl.gz"))
    assert rej["id"] == items[3]["id"] and rej["custom"]["reject"]["code"] == "error"
    assert "AttributeError" in rej["custom"]["reject"]["reason"]


def test_config_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="no stage named 'nope'"):
        load_pipeline(ASR, ["nope.x=1"])
    with pytest.raises(ConfigError, match=r"'filter_cps': unknown parameter 'max_cpz'; known parameters: "):
        load_pipeline(ASR, ["filter_cps.max_cpz=3"])
    with pytest.raises(ConfigError, match="unknown stage"):
        build_config({"stages": [{"stage": "does_not_exist"}]})
    assert load_pipeline(ASR, ["filter_cps.max_cps=12"]).stages[2].params["max_cps"] == 12
    # YAML 1.1 would read 1e-1 as a string; overrides read it as the number it is.
    assert load_pipeline(ASR, ["filter_duration.min_duration=1e-1"]).stages[1].params["min_duration"] == 0.1


def test_driver_memory_does_not_grow_with_the_corpus(tmp_path, ray_session):
    cfg = build_config({"shard_size": 50, "stages": [{"stage": "normalize_text"}, {"stage": "template"}]})
    peaks = {}
    for n in (1000, 8000):
        manifest = demo_like_manifest(tmp_path, n)
        tracemalloc.start()
        run_pipeline(cfg, manifest, tmp_path / f"m{n}", workers=2, progress=False)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    size = {n: sum(len(json.dumps(d)) for d in read_jsonl(tmp_path / f"in{n}.jsonl.gz")) for n in peaks}
    input_growth = size[8000] - size[1000]  # what holding the corpus in the driver would add
    # Holding the corpus would add megabytes; streaming adds only per-shard statistics.
    assert peaks[8000] - peaks[1000] < 0.1 * input_growth, (peaks, input_growth)


# --- kills: the CLI in a subprocess, so that its Ray and its driver can be killed ---------------

SLOW = """
name: slow_asr
shard_size: 10
imports: [stages_for_tests]
stages:
  - stage: normalize_text
  - stage: check_audio
  - stage: audio_policy
    min_sampling_rate: 8000
  - stage: sleep_per_cut
    seconds: 0.03
  - stage: template
    task: asr
"""


def _cli(pipeline: Path, manifest: Path, out: Path, workers: int = 2) -> list[str]:
    return [
        sys.executable,
        "-m",
        "osum_data.cli",
        "run",
        str(pipeline),
        "--input",
        str(manifest),
        "--output",
        str(out),
        "--workers",
        str(workers),
        "--no-progress",
    ]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)])}


def _done_count(out: Path) -> int:
    return len(list((out / "shards").glob("done.*.json")))


def _wait_for(cond, timeout: float = 120.0) -> None:
    end = time.time() + timeout
    while not cond():
        if time.time() > end:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)


@pytest.fixture
def slow_run(tmp_path, ray_session):
    pipeline = tmp_path / "slow.yaml"
    pipeline.write_text(SLOW)
    manifest = demo_like_manifest(tmp_path, 240)
    reference = tmp_path / "reference"
    run_pipeline(load_pipeline(pipeline), manifest, reference, workers=2, progress=False)
    return pipeline, manifest, reference


def _same_output(a: Path, b: Path) -> bool:
    return all((a / n).read_bytes() == (b / n).read_bytes() for n in ("cuts.jsonl.gz", "rejects.jsonl.gz"))


@pytest.mark.slow
def test_resume_after_the_driver_is_killed(slow_run, tmp_path):
    pipeline, manifest, reference = slow_run
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        _cli(pipeline, manifest, out),
        env=_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(lambda: _done_count(out) >= 3)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = _done_count(out)
    assert 3 <= finished < 24, "the driver must die mid-run"
    assert not (out / "summary.json").exists()
    subprocess.run(_cli(pipeline, manifest, out), env=_env(), check=True, capture_output=True)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_shards"] >= finished
    assert _same_output(out, reference)


@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_the_output_is_unchanged(slow_run, tmp_path):
    pipeline, manifest, reference = slow_run
    out = tmp_path / "worker_killed"
    proc = subprocess.Popen(
        _cli(pipeline, manifest, out),
        env=_env(),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for(lambda: _done_count(out) >= 2)
        workers = [
            p
            for p in psutil.Process(proc.pid).children(recursive=True)
            if "ShardWorker" in " ".join(p.cmdline())
        ]
        assert workers, "no ShardWorker actor process found"
        workers[0].kill()
        killed_at = _done_count(out)
        assert proc.wait(timeout=300) == 0, proc.stdout.read().decode()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert killed_at < 24, "the worker must die mid-run"
    assert _same_output(out, reference)
    # Run again: nothing left to do, same bytes.
    subprocess.run(_cli(pipeline, manifest, out), env=_env(), check=True, capture_output=True)
    assert json.loads((out / "summary.json").read_text())["skipped_shards"] == 24
    assert _same_output(out, reference)
    with gzip.open(out / "cuts.jsonl.gz", "rt") as f:
        assert sum(1 for _ in f) == json.loads((out / "summary.json").read_text())["out"]


@pytest.mark.slow
def test_runs_on_an_existing_cluster_with_address(slow_run, tmp_path):
    """`--address` joins a running Ray cluster (here a head node on loopback) instead of starting one."""
    import socket

    pipeline, manifest, reference = slow_run
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray_bin = Path(sys.executable).parent / "ray"
    head = subprocess.Popen(
        [
            str(ray_bin),
            "start",
            "--head",
            "--block",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(port),
            "--num-cpus",
            "2",
            "--include-dashboard",
            "false",
        ],
        env=_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def head_up() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        _wait_for(head_up, timeout=120)
        out = tmp_path / "on_cluster"
        cmd = _cli(pipeline, manifest, out) + ["--address", f"127.0.0.1:{port}"]
        proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "Started a local Ray instance" not in proc.stderr
        assert _same_output(out, reference)
    finally:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()


def test_class_stages_are_built_once_per_worker(tmp_path, ray_session):
    """A stage class (one that would load a model) is constructed once per Ray worker, not per shard."""
    log = tmp_path / "loads.txt"
    cfg = build_config(
        {
            "shard_size": 10,
            "imports": ["stages_for_tests"],
            "stages": [{"stage": "count_loads", "log": str(log)}],
        }
    )
    res = run_pipeline(cfg, demo_like_manifest(tmp_path, 120), tmp_path / "out", workers=2, progress=False)
    assert res.summary["shards"] == 12 and res.summary["out"] == 120
    pids = log.read_text().split()
    assert len(pids) == 2 and len(set(pids)) == 2 and str(os.getpid()) not in pids


def test_stereo_from_prepare_tsv_is_rejected_or_downmixed(tmp_path, ray_session):
    """Before: prepare tsv built every cut on channel 0, so `channels: reject` never fired and the
    export silently kept the left channel."""
    import soundfile as sf

    from osum_data.corpora import prepare

    audio, text = speech("activated", 16000)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    sf.write(corpus / "st.wav", np.stack([audio, -0.5 * audio], 1), 16000)
    (corpus / "metadata.tsv").write_text(f"id\taudio\ttext\tlanguage\nst\tst.wav\t{text}\ten\n")
    prepare("tsv", corpus, tmp_path / "imp")
    cuts = tmp_path / "imp" / "cuts.jsonl.gz"
    res = run_pipeline(load_pipeline(ASR), cuts, tmp_path / "rej", workers=1, progress=False)
    assert res.summary["rejected_by_reason"] == {"audio_policy:multi_channel": 1}
    cfg = load_pipeline(ASR, ["audio_policy.channels=downmix"])
    res = run_pipeline(cfg, cuts, tmp_path / "mix", workers=1, progress=False)
    (cut,) = CutSet.from_file(tmp_path / "mix" / "cuts.jsonl.gz")
    source = cut.recording.sources[0].source
    assert source.startswith(str(tmp_path / "mix" / "files" / "000000" / "audio_policy"))
    assert source.endswith(".flac")
    assert cut.custom["downmixed_from"]["channels"] == [0, 1] and cut.channel == 0
    mixed = cut.load_audio()[0]
    expected = (audio + (-0.5 * audio)) / 2
    np.testing.assert_allclose(mixed, expected, atol=2 / 32768)
