"""Issue 15 item 6: a finished shard is reused only if everything it read is unchanged, the audio of
its side inputs included (new noise bytes under the same noise manifest re-run the shards)."""

from __future__ import annotations

import json
import os

import numpy as np
import soundfile as sf
from lhotse import CutSet, Recording

from osum_data.demo import write_cycled_manifest
from osum_data.run.config import load_pipeline
from osum_data.run.params import SideInput
from osum_data.run.runner import run_pipeline
from tests.conftest import REPO

PROMPTS = ["activated", "goodbye", "hello", "auth-thankyou"]


def _noise_bank(folder, seed: int):
    """A one-clip noise bank: the manifest names `noise.wav`, whose bytes depend on `seed`."""
    folder.mkdir(exist_ok=True)
    wav = folder / "noise.wav"
    sf.write(wav, np.random.default_rng(seed).standard_normal(16000 * 3) * 0.1, 16000, subtype="PCM_16")
    manifest = folder / "noise.jsonl.gz"
    if not manifest.exists():
        CutSet.from_cuts([Recording.from_file(wav, recording_id="noise").to_cut()]).to_file(manifest)
    return manifest


def test_new_noise_audio_under_the_same_manifest_reruns_the_shards(tmp_path, ray_session):
    manifest = write_cycled_manifest(tmp_path / "in.jsonl.gz", 4, PROMPTS)
    noise = _noise_bank(tmp_path / "noise", seed=1)
    manifest_bytes = noise.read_bytes()
    out = tmp_path / "out"

    def run():
        config = load_pipeline(
            REPO / "pipelines/sgc.yaml",
            [f"augment.noise={noise}", "audio_policy.min_sampling_rate=8000", "shard_size=2"],
        )
        return run_pipeline(config, manifest, out, workers=1, progress=False).summary

    first = run()
    assert first["shards"] == 2 and first["skipped_shards"] == 0 and first["derived"] > 0
    done = out / "shards" / "done.000000.json"
    made = json.loads(done.read_text())["hash"]
    assert run()["skipped_shards"] == 2  # nothing changed: both shards reused

    _noise_bank(tmp_path / "noise", seed=2)  # other noise, same length: same manifest bytes
    assert noise.read_bytes() == manifest_bytes
    third = run()
    assert third["skipped_shards"] == 0, "shards made with the old noise were kept"
    assert json.loads(done.read_text())["hash"] != made
    assert third["derived"] == first["derived"] and third["out"] == first["out"]
    assert run()["skipped_shards"] == 2  # and the new noise, unchanged, is reused again


def test_the_side_input_digest_covers_audio_stats_not_only_the_manifest(tmp_path):
    noise = _noise_bank(tmp_path / "noise", seed=1)
    digest = SideInput(noise).digest
    assert SideInput(noise).digest == digest  # stable while nothing changes
    wav = tmp_path / "noise" / "noise.wav"
    st = wav.stat()
    os.utime(wav, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # touched: redo, to be safe
    assert SideInput(noise).digest != digest
    wav.unlink()  # gone: a digest of its own, no crash (the stage names the missing file)
    assert SideInput(noise).digest not in (digest,)
