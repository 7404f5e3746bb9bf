"""The augment stage on real speech: decodable FLAC copies of the source's duration that differ from
it, with an SNR that can be measured back from the stored noise and offset; same seed, same bytes,
whatever the worker count; every input accounted for."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet
from lhotse.utils import perturb_num_samples

from osum_data.manifest_io import read_jsonl, write_jsonl
from osum_data.run.config import ConfigError, build_config
from osum_data.run.params import validate_params
from osum_data.run.runner import run_pipeline
from osum_data.run.stage import StageContext, get_stage, load_stage_modules
from tests.para_fixtures import noise_manifest, rir_manifest
from tests.test_runner import demo_like_manifest

load_stage_modules(["osum_data.augment.stage"])


def build_stage(**params):
    defn = get_stage("augment")
    typed, _ = validate_params(defn, params)
    return defn.factory(**typed)


def source_audio(cut) -> np.ndarray:
    return cut.resample(16000).load_audio()[0].astype(np.float64)


def noise_segment(noise_cuts: CutSet, info: dict, n: int) -> np.ndarray:
    """The stored noise, decoded independently of the stage, from the recorded cut and offset."""
    clip = noise_cuts[info["cut_id"]].resample(16000).load_audio().mean(axis=0).astype(np.float64)
    start = info["offset_samples"]
    reps = int(np.ceil((start + n) / clip.size))
    assert info["looped"] == (reps > 1 or start + n > clip.size)
    return np.tile(clip, reps)[start : start + n]


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("augment")
    return {
        "speech": demo_like_manifest(tmp, 12),
        "noise": noise_manifest(tmp),
        "rir": rir_manifest(tmp),
    }


def test_copies_decode_keep_duration_differ_and_their_snr_measures_back(tmp_path, inputs):
    stage = build_stage(noise=str(inputs["noise"]), copies=2, snr_db=(0.0, 20.0))
    ctx = StageContext(seed=3, shard_index=0, run_dir=tmp_path, stage="augment")
    sources = list(CutSet.from_file(inputs["speech"]))[:8]
    result = stage(sources, ctx)
    assert not result.rejected and len(result.kept) == 3 * len(sources)
    noise_cuts = CutSet.from_file(inputs["noise"]).to_eager()
    by_id = {c.id: c for c in sources}
    errors, looped = [], 0
    for cut in result.kept:
        if cut.id in by_id:
            assert cut is by_id[cut.id]  # the original, untouched
            continue
        src = by_id[cut.custom["source_cut_id"]]
        aug = cut.custom["augment"]
        assert cut.id == f"{src.id}_aug{aug['copy']}" and aug["source_cut_id"] == src.id
        assert (
            aug["steps"] == ["noise"]
            and aug["noise"]["recording_id"] == noise_cuts[aug["noise"]["cut_id"]].recording_id
        )
        path = Path(cut.recording.sources[0].source)
        assert path.parent == tmp_path / "files" / "000000" / "augment" and path.suffix == ".flac"
        mix, sr = sf.read(path, dtype="float64")
        clean = source_audio(src)
        assert sr == 16000 and mix.size == clean.size and abs(cut.duration - src.duration) < 1 / 16000
        assert cut.supervisions[0].text == src.supervisions[0].text
        noise = noise_segment(noise_cuts, aug["noise"], mix.size)
        looped += aug["noise"]["looped"]
        (a, b), *_ = np.linalg.lstsq(np.stack([clean, noise], axis=1), mix, rcond=None)
        assert abs(a - aug["peak_scale"]) < 1e-3  # the speech is in there at its level
        assert rms(mix - a * clean) > 0.05 * rms(clean)  # and something else was added
        measured = 20 * np.log10(rms(a * clean) / rms(b * noise))
        errors.append(abs(measured - aug["noise"]["snr_db"]))
        assert 0.0 <= aug["noise"]["snr_db"] <= 20.0
    assert max(errors) < 0.5, errors
    assert looped > 0  # the 1.2 s brown noise had to be looped under longer prompts
    # Each noise clip was decoded at most once in this worker, however many copies used it.
    assert 1 <= result.counters["noise_decodes"] <= 3 and result.counters["copies"] == 16
    print(f"SNR error: max {max(errors):.4f} dB over {len(errors)} copies")


def test_reverb_gain_and_speed_are_recorded_and_scale_the_supervisions(tmp_path, inputs):
    stage = build_stage(
        noise=str(inputs["noise"]), rir=str(inputs["rir"]), rir_p=1.0, gain_db=(-6, -3), speed=[0.9, 1.1]
    )
    ctx = StageContext(seed=0, shard_index=0, run_dir=tmp_path, stage="augment")
    src = next(iter(CutSet.from_file(inputs["speech"])))
    original, copy = stage([src], ctx).kept
    aug = copy.custom["augment"]
    assert aug["steps"] == ["speed", "rir", "noise", "gain"]
    factor = aug["speed"]["factor"]
    assert (
        factor in (0.9, 1.1)
        and aug["rir"]["cut_id"] in ("rir0", "rir1")
        and -6 <= aug["gain"]["gain_db"] <= -3
    )
    n = perturb_num_samples(round(src.duration * 16000), factor)
    audio, _ = sf.read(copy.recording.sources[0].source)
    assert audio.size == n and copy.supervisions[0].duration == pytest.approx(n / 16000, abs=1e-3)
    assert copy.supervisions[0].recording_id == copy.recording.id == copy.id


def test_stereo_sources_are_downmixed(tmp_path, inputs):
    folder = tmp_path / "st"
    folder.mkdir()
    t = np.arange(16000) / 16000
    sf.write(
        folder / "s.wav", np.stack([np.sin(2 * np.pi * 200 * t), np.sin(2 * np.pi * 300 * t)], 1) * 0.3, 16000
    )
    from tests.para_fixtures import import_folder

    cut = next(
        iter(CutSet.from_file(import_folder(folder, ["id", "audio", "text"], [["s", "s.wav", "two tones"]])))
    )
    assert len(cut.channel) == 2
    stage = build_stage(noise=str(inputs["noise"]), snr_db=(30, 30))
    original, copy = stage([cut], StageContext(seed=0, shard_index=0, run_dir=tmp_path, stage="augment")).kept
    assert (
        original.id == "s"
        and original.num_channels == 1
        and original.custom["downmixed_from"]["channels"] == [0, 1]
    )
    assert sf.info(copy.recording.sources[0].source).channels == 1
    strict = build_stage(noise=str(inputs["noise"]), channels="reject")
    ((rejected, reason),) = strict([cut], StageContext(0, 0, tmp_path, "augment")).rejected
    assert rejected.id == "s" and reason.code == "multi_channel"


def _cfg(inputs: dict, **augment) -> dict:
    return {
        "name": "aug",
        "shard_size": 4,
        "imports": ["osum_data.augment.stage"],
        "stages": [
            {"stage": "augment", "noise": str(inputs["noise"]), "rir": str(inputs["rir"]), **augment},
            {"stage": "template", "task": "asr"},
        ],
    }


def _snapshot(out: Path) -> tuple[str, dict[str, bytes]]:
    text = "\n".join(json.dumps(d) for d in read_jsonl(out / "cuts.jsonl.gz")).replace(str(out), "OUT")
    files = {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "files").rglob("*.flac"))}
    return text, files


def test_same_seed_same_bytes_for_1_and_2_workers_and_every_input_accounted(tmp_path, inputs, ray_session):
    speech = list(read_jsonl(inputs["speech"]))
    speech[5]["recording"]["sources"][0]["source"] = str(tmp_path / "gone.wav")  # this one cannot be read
    manifest = tmp_path / "in.jsonl.gz"
    write_jsonl(manifest, speech)
    cfg = build_config(_cfg(inputs, copies=2, gain_db=[-2, 2]))
    one = run_pipeline(cfg, manifest, tmp_path / "w1", workers=1, progress=False).summary
    two = run_pipeline(cfg, manifest, tmp_path / "w2", workers=2, progress=False).summary
    a, b = _snapshot(tmp_path / "w1"), _snapshot(tmp_path / "w2")
    assert a == b and len(a[1]) == 22
    s = one
    assert (s["in"], s["out"], s["derived"], s["rejected"]) == (12, 33, 22, 1)
    assert s["in"] == s["out"] - s["derived"] + s["rejected"]
    row = next(st for st in s["stages"] if st["stage"] == "augment")
    assert (row["in"], row["out"], row["derived"], row["rejected"]) == (12, 33, 22, 1)
    assert row["counters"]["copies"] == 22
    (rej,) = read_jsonl(tmp_path / "w1" / "rejects.jsonl.gz")
    assert rej["id"] == speech[5]["id"] and "gone.wav" in rej["custom"]["reject"]["reason"]
    assert {k: two[k] for k in ("in", "out", "derived")} == {k: s[k] for k in ("in", "out", "derived")}
    # Another pipeline seed draws other noise: other bytes.
    other = build_config({**_cfg(inputs, copies=2, gain_db=[-2, 2]), "seed": 1})
    run_pipeline(other, manifest, tmp_path / "s1", workers=2, progress=False)
    assert _snapshot(tmp_path / "s1")[1].keys() == a[1].keys() and _snapshot(tmp_path / "s1")[1] != a[1]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "nothing to augment with: set noise=NOISE_CUTS and/or rir=RIR_CUTS"),
        ({"noise": "NOISE", "snr_db": [20, 5]}, r"snr_db \[20.0, 5.0\]: the minimum is above the maximum"),
        ({"noise": "NOISE", "copies": 0, "keep_original": False}, "would drop every cut"),
        ({"noise": "missing.jsonl.gz"}, "side-input manifest 'missing.jsonl.gz' does not exist"),
    ],
)
def test_bad_augment_parameters_fail_at_load(inputs, params, message):
    params = {k: str(inputs["noise"]) if v == "NOISE" else v for k, v in params.items()}
    with pytest.raises(ConfigError, match=message):
        build_config({"imports": ["osum_data.augment.stage"], "stages": [{"stage": "augment", **params}]})


def test_augment_seeds_keep_their_numbers_on_the_one_seeded_draw():
    """copy_seed and the event composite's generator now come from osum_data.seeded.seed_bits;
    they give the numbers the earlier hand-written sha256 draws gave (recorded from that code), so
    augmented copies of the same cut do not change."""
    from osum_data.augment.composite import _rng
    from osum_data.augment.stage import copy_seed

    assert copy_seed(7, "utt1", 2) == 4447360123712661463
    assert _rng(7, "utt1").integers(0, 10**9) == 367212610
