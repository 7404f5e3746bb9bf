"""The VED, SER, SGC and SAP pipelines end to end on small inputs: real speech (Asterisk prompts,
female), TTS personas with known gender/age/emotion (espeak-ng), an untranscribed labelled clip (as
VoxCeleb has), real laughs and coughs (hedgewars-data), noise and RIRs made here."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet

from osum_data.demo.para import asterisk_few_input, events_input, plan, synthesise
from osum_data.manifest_io import read_jsonl, write_jsonl
from osum_data.run.config import ConfigError, load_pipeline
from osum_data.run.runner import run_pipeline
from osum_data.run.stage import StageContext, get_stage
from osum_data.tasks import parse_target
from tests.conftest import REPO
from tests.para_fixtures import import_folder, noise_manifest, rir_manifest

PIPELINES = REPO / "pipelines"
EIGHT_KHZ = "audio_policy.min_sampling_rate=8000"  # the Asterisk prompts are 8 kHz


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("para")
    spec = plan()
    personas = {p["id"]: p for p in spec["personas"]}
    folder = tmp / "personas"
    folder.mkdir()
    rows = []
    for pid, emotion in [
        ("man_espeak", "angry"),
        ("girl_annie", "happy"),
        ("grandma", "sad"),
        ("man_espeak", "neutral"),
    ]:
        text = spec["sentences"][emotion][0]
        name = f"{pid}_{emotion}"
        synthesise(personas[pid], spec["emotions"][emotion], text, folder / f"{name}.wav")
        p = personas[pid]
        rows.append([name, f"{name}.wav", text, "en", pid, p["gender"], p["age"], emotion])
    # A labelled clip without a transcript (VoxCeleb-like): gender only.
    synthesise(
        personas["man_espeak"],
        spec["emotions"]["neutral"],
        "one two three four",
        folder / "untranscribed.wav",
    )
    rows.append(["untranscribed", "untranscribed.wav", "", "en", "man_espeak", "male", "", ""])
    header = ["id", "audio", "text", "language", "speaker", "gender", "age", "emotion"]
    tts = import_folder(folder, header, rows)
    speech = asterisk_few_input(tmp, n=4)
    mixed = tmp / "mixed.jsonl.gz"
    write_jsonl(mixed, [*read_jsonl(speech), *read_jsonl(tts)])
    return {
        "tts": tts,
        "speech": speech,
        "mixed": mixed,
        "events": events_input(tmp, limit=3),
        "noise": noise_manifest(tmp),
        "rir": rir_manifest(tmp),
    }


def run(name: str, input_path: Path, out: Path, *sets: str) -> tuple[dict, list]:
    cfg = load_pipeline(PIPELINES / f"{name}.yaml", [EIGHT_KHZ, "shard_size=5", *sets])
    summary = run_pipeline(cfg, input_path, out, workers=2, progress=False).summary
    assert summary["in"] == summary["out"] - summary["derived"] + summary["rejected"]
    cuts = list(CutSet.from_file(out / "cuts.jsonl.gz"))
    for cut in cuts:  # every target reads back to the labels on the supervision
        parsed = parse_target(cut.custom["task"], cut.custom["target"])
        sup = cut.supervisions[0]
        for field, value in parsed.labels.items():
            assert value == (sup.gender if field == "gender" else sup.custom[field]), (cut.id, field)
        if parsed.transcript is not None:
            assert parsed.transcript == sup.text
    return summary, cuts


def test_ved_event_clips_are_x_only_and_speech_is_joined_with_a_recorded_event(corpus, tmp_path, ray_session):
    events = list(CutSet.from_file(corpus["events"]))
    both = tmp_path / "in.jsonl.gz"
    write_jsonl(both, [*read_jsonl(corpus["speech"]), *read_jsonl(corpus["events"])])
    sets = ["audio_policy.channels=downmix", f"event_composite.events={corpus['events']}"]
    summary, cuts = run(
        "ved", both, tmp_path / "ved", *sets, "event_composite.positions=[before, after, overlap]"
    )
    assert summary["rejected"] == 0 and summary["out"] == 4 + len(events)
    tasks = Counter(c.custom["task"] for c in cuts)
    assert tasks == {"<CAPTION>": len(events), "<TRANSCRIBE> <CAPTION>": 4}
    sources = {c.id: c for c in CutSet.from_file(corpus["speech"])}
    clips = {c.id: c for c in events}
    for cut in cuts:
        if cut.custom["task"] == "<CAPTION>":
            assert cut.custom["target"] in ("<LAUGH>", "<COUGH>") and cut.id in clips
            continue
        info = cut.custom["composite"]
        src = sources[cut.custom["source_cut_id"]]
        assert cut.id == f"{src.id}_ev" and info["speech_cut_id"] == src.id
        text = " ".join(src.supervisions[0].text.split())  # as normalize_text left it
        tag = {"laugh": "<LAUGH>", "cough": "<COUGH>"}[info["events"][0]]
        assert cut.supervisions[0].text == text and cut.custom["target"] == text + tag
        assert (
            cut.supervisions[0].gender == "female"
            and cut.supervisions[0].custom["label_source"]["events"] == "corpus"
        )
        audio, sr = sf.read(cut.recording.sources[0].source)
        speech = src.resample(16000).load_audio()[0]
        a, b = round(info["speech_start"] * sr), round(info["event_start"] * sr)
        assert audio.size / sr == pytest.approx(cut.duration) and info["speech_end"] * sr == pytest.approx(
            a + speech.size, abs=1
        )
        if info["position"] != "overlap":  # the speech lies where recorded, untouched but for the peak scale
            np.testing.assert_allclose(audio[a : a + speech.size], speech * info["peak_scale"], atol=2e-4)
            assert (
                np.abs(audio[b : round(info["event_end"] * sr)]).max() > 0.01
            )  # and the event where recorded
    # Speech without an event label and no clips to join it with: rejected with the reason.
    stage = get_stage("event_composite").factory()
    (rej,) = stage([next(iter(sources.values()))], StageContext(0, 0, tmp_path, "event_composite")).rejected
    assert rej[1].code == "no_event_clips" and "event_composite.events" in rej[1].detail


def test_ser_has_asr_plus_x_and_x_only_samples_and_rejects_cuts_without_emotion(
    corpus, tmp_path, ray_session
):
    summary, cuts = run("ser", corpus["mixed"], tmp_path / "ser", "template.x_only_ratio=0.5")
    assert summary["rejected_by_reason"] == {
        "template:missing_label": 5
    }  # 4 prompts + the untranscribed clip
    assert summary["out"] == 4
    tasks = Counter(c.custom["task"] for c in cuts)
    assert set(tasks) == {"<TRANSCRIBE> <EMOTION>", "<EMOTION>"}
    angry = next(c for c in cuts if c.id == "man_espeak_angry")
    assert angry.custom["target"].endswith("<ANGRY>")


@pytest.mark.parametrize("task", ["sgc", "sap"])
def test_sgc_and_sap_double_the_data_and_use_multi_label_keys(corpus, tmp_path, ray_session, task):
    sets = [f"augment.noise={corpus['noise']}", f"augment.rir={corpus['rir']}"]
    summary, cuts = run(task, corpus["mixed"], tmp_path / task, *sets)
    kept_sources = [c for c in cuts if "source_cut_id" not in (c.custom or {})]
    copies = [c for c in cuts if "augment" in (c.custom or {})]
    assert len(copies) == len(kept_sources) and summary["derived"] == summary["in"] == 9  # twice the data
    assert {c.custom["source_cut_id"] for c in copies} == {c.id for c in kept_sources}
    by_id = {c.id: c for c in cuts}
    for persona in ("man_espeak_angry", "girl_annie_happy", "grandma_sad"):
        for cut in (by_id[persona], by_id[f"{persona}_aug0"]):
            assert cut.custom["task"] in ("<TRANSCRIBE> <AGE> <GENDER>", "<AGE> <GENDER>")
    assert by_id["girl_annie_happy"].custom["target"].endswith("<CHILD><FEMALE>")
    if task == "sgc":  # gender alone: the single-label key; no transcript: X-only
        assert {by_id[c.id].custom["task"] for c in kept_sources if c.id.startswith("asterisk")} <= {
            "<TRANSCRIBE> <GENDER>",
            "<GENDER>",
        }
        assert (
            by_id["untranscribed"].custom["task"] == "<GENDER>"
            and by_id["untranscribed"].custom["target"] == "<MALE>"
        )
        assert summary["rejected"] == 0 and summary["out"] == 18
    else:  # no age: no SAP sample
        assert summary["rejected_by_reason"] == {"template:missing_label": 10}  # 5 cuts and their copies
    for cut in copies:
        assert (
            Path(cut.recording.sources[0].source).is_file() and cut.custom["augment"]["noise"]["snr_db"] >= 5
        )


def test_every_task_pipeline_takes_the_audio_policy_override_and_sgc_needs_noise(corpus):
    for name in ("ved", "ser", "sgc", "sap"):
        sets = {"ved": [f"event_composite.events={corpus['events']}"], "ser": []}.get(
            name, ["augment.copies=0"]
        )
        cfg = load_pipeline(PIPELINES / f"{name}.yaml", [EIGHT_KHZ, *sets])
        names = [s.name for s in cfg.stages]
        assert names[:5] == ["normalize_text", "filter_duration", "filter_cps", "check_audio", "audio_policy"]
        assert cfg.stages[4].params["min_sampling_rate"] == 8000 and names[-1] == "template"
    for name in ("sgc", "sap"):
        with pytest.raises(
            ConfigError, match=r"stage 'augment': nothing to augment with: set noise=NOISE_CUTS"
        ):
            load_pipeline(PIPELINES / f"{name}.yaml")
    with pytest.raises(ConfigError, match=r"stage 'event_composite': events: .* set event_composite.events="):
        load_pipeline(PIPELINES / "ved.yaml")  # VED, likewise, needs event clips to join speech with
