"""Stage parameters that name files, URLs or side inputs are checked when the pipeline loads (in the
driver, before Ray starts), with one line naming the stage, the key and the file; none of these
reach a worker. No Ray here: build_config is all that runs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from lhotse import MonoCut, Recording, SupervisionSegment

from osum_data.manifest_io import write_jsonl
from osum_data.run.config import ConfigError, build_config
from tests.corpus_fixtures_para import write_noise

IMPORTS = [
    "osum_data.augment.stage",
    "osum_data.augment.composite",
    "osum_data.synth.personas",
    "osum_data.synth.tts_stage",
    "osum_data.label.align",
]


def clip(tmp: Path, name: str, events: list[str] | None = None) -> dict:
    """A cut dict over a real wav, with `custom.events` on its supervision when given."""
    wav = tmp / f"{name}.wav"
    write_noise(wav, 0.3)
    rec = Recording.from_file(wav, recording_id=name)
    sup = SupervisionSegment(
        id=name,
        recording_id=name,
        start=0,
        duration=rec.duration,
        custom={"events": events} if events else None,
    )
    return MonoCut(
        id=name, start=0, duration=rec.duration, channel=0, recording=rec, supervisions=[sup]
    ).to_dict()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("side")
    out = {
        "events": tmp / "events.jsonl.gz",
        "speech": tmp / "speech.jsonl.gz",
        "garbage": tmp / "garbage.jsonl",
        "empty_gz": tmp / "empty.jsonl.gz",
        "empty": tmp / "empty.jsonl",
        "recordings": tmp / "recordings.jsonl.gz",
        "no_audio": tmp / "no_audio.jsonl.gz",
        "not_gzip": tmp / "not_gzip.jsonl.gz",
        "dir": tmp / "adir",
        "list_yaml": tmp / "list.yaml",
    }
    write_jsonl(out["events"], [clip(tmp, "laugh1", ["laugh"])])
    speech = clip(tmp, "speech1")
    write_jsonl(out["speech"], [speech])
    out["garbage"].write_text("not json at all\n")
    with gzip.open(out["empty_gz"], "wb"):
        pass
    out["empty"].write_text("")
    write_jsonl(out["recordings"], [speech["recording"]])  # a recordings manifest, not cuts
    write_jsonl(out["no_audio"], [{k: v for k, v in speech.items() if k != "recording"}])
    out["not_gzip"].write_text(json.dumps(speech) + "\n")
    out["dir"].mkdir()
    out["list_yaml"].write_text("- a\n- b\n")
    return out


def load(*stages: dict) -> None:
    build_config({"imports": IMPORTS, "stages": list(stages)}, "p.yaml")


def one_line_error(*stages: dict) -> str:
    with pytest.raises(ConfigError) as info:
        load(*stages)
    message = str(info.value)
    assert "\n" not in message and message.startswith("p.yaml: stage ")
    return message


# -- VED: event_composite ---------------------------------------------------------------------------


def test_event_composite_gap_must_be_non_negative_and_ordered(files):
    ok = {"stage": "event_composite", "events": str(files["events"])}
    load(ok)
    assert "gap_s.0=-1" in one_line_error({**ok, "gap_s": [-1, -0.5]})
    assert "gap_s [0.5, 0.1]: the minimum is above the maximum" in one_line_error({**ok, "gap_s": [0.5, 0.1]})


def test_event_composite_without_events_stops_at_load_saying_what_to_set(files):
    message = one_line_error({"stage": "event_composite"})
    assert "set event_composite.events=EVENT_CUTS" in message


def test_event_clips_without_event_labels_are_caught_at_load(files):
    message = one_line_error({"stage": "event_composite", "events": str(files["speech"])})
    assert f"events: side-input manifest {str(files['speech'])!r} holds no usable event clips" in message


# -- side-input manifests (augment.noise, augment.rir, event_composite.events) ----------------------


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("garbage", "is not a cuts manifest: line 1 is not JSON"),
        ("empty_gz", "is empty: it holds no cuts"),
        ("empty", "is empty: it holds no cuts"),
        ("recordings", "is not a cuts manifest: line 1 is a Recording, not a cut"),
        ("not_gzip", "is not a readable gzip file"),
        ("dir", "is a directory, not a cuts manifest"),
    ],
)
def test_a_side_input_that_is_not_a_cuts_manifest_is_named_at_load(files, key, message):
    path = str(files[key])
    for stage, param in (("augment", "noise"), ("augment", "rir"), ("event_composite", "events")):
        got = one_line_error({"stage": stage, param: path})
        assert f"stage {stage!r}: {param}={path!r}: side-input manifest {path!r} {message}" in got


def test_noise_without_audio_is_caught_at_load(files):
    message = one_line_error({"stage": "augment", "noise": str(files["no_audio"])})
    assert f"noise: side-input manifest {str(files['no_audio'])!r} holds no usable noise cuts" in message
    load({"stage": "augment", "noise": str(files["speech"])})  # any cuts with audio are noise enough


# -- persona speech: tts and personas ---------------------------------------------------------------


def test_tts_url_backend_and_voice_table_are_checked_at_load(files):
    tts = {"stage": "tts"}
    load(tts, {"stage": "tts", "name": "t2", "backend": "http", "url": "http://127.0.0.1:9/v1"})
    assert "url='notaurl': must start with http:// or https://" in one_line_error(
        {**tts, "backend": "http", "url": "notaurl"}
    )
    assert "backend=http needs url" in one_line_error({**tts, "backend": "http"})
    assert "voices='/nonexistent.yaml': file '/nonexistent.yaml' does not exist" in one_line_error(
        {**tts, "voices": "/nonexistent.yaml"}
    )
    assert "expected a mapping of backend tables" in one_line_error(
        {**tts, "voices": str(files["list_yaml"])}
    )
    assert "voices: " in one_line_error({**tts, "voices": str(files["garbage"])})
    assert "is a directory; give a file" in one_line_error({**tts, "voices": str(files["dir"])})


def test_persona_table_is_checked_at_load(files):
    after = {"stage": "tts"}
    load({"stage": "personas", "n": 2}, after)
    message = one_line_error({"stage": "personas", "table": "/nonexistent.yaml"}, after)
    assert "table='/nonexistent.yaml': file '/nonexistent.yaml' does not exist" in message
    for bad in ("garbage", "list_yaml"):
        message = one_line_error({"stage": "personas", "table": str(files[bad])}, after)
        assert f"table: {files[bad]}: expected a mapping with ages, genders, emotions and topics" in message


# -- model directories ------------------------------------------------------------------------------


def test_model_dirs_are_checked_at_load(files):
    for stage in ("transcribe_whisper", "align_whisper"):
        assert "model_dir='/nonexistent': directory '/nonexistent' does not exist" in one_line_error(
            {"stage": stage, "model_dir": "/nonexistent"}
        )
        assert "is not a CTranslate2 Whisper model directory (no model.bin)" in one_line_error(
            {"stage": stage, "model_dir": str(files["dir"])}
        )
    assert "holds no CTC checkpoint (config.json)" in one_line_error(
        {"stage": "align_ctc", "model_dir": str(files["dir"])}
    )
    assert "is a file; give a directory" in one_line_error(
        {"stage": "align_pocketsphinx", "model_dir": str(files["garbage"])}
    )
