"""Persona speech, part 2: the `tts` stage voices each persona's utterance with a voice that matches
the persona (the voice table, `voices.yaml`, is data) and makes it a labelled speech cut.

For each cut: the voice comes from `<backend>.<language>.<gender>.<age>` (one of the listed voices, by a
draw fixed by the seed and the cut id), the emotion's prosody from `emotions`; the audio is written as
FLAC into the shard's files directory; the cut is rebuilt around it with the same id and the persona's
labels on its supervision: `gender`, `custom.age`, `custom.emotion`, each with
`label_source: llm+tts:<backend>`, and `custom.tts` on the cut saying how it was made. Such cuts go
through the usual checks and feed SGC, SAP, SER (and, with an answer, STTC).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import soundfile as sf
from lhotse import MonoCut, Recording, SupervisionSegment
from lhotse.cut import Cut
from pydantic import Field

from osum_data.manifest_io import atomic_path, safe_file_name
from osum_data.run.params import ExistingFile, HttpUrl
from osum_data.run.stage import Reject, StageContext, StageResult, register_stage
from osum_data.seeded import unit_draw
from osum_data.synth.backends import Prosody, TTSError, finish, make_backend
from osum_data.yaml_config import read_yaml_table

VOICES_YAML = Path(__file__).with_name("voices.yaml")


@cache
def load_voices(path: str | None = None) -> dict[str, Any]:
    source = Path(path) if path else VOICES_YAML
    data = read_yaml_table(source, "voice table")
    if not isinstance(data, dict) or not isinstance(data.get("emotions"), dict):
        raise ValueError(f"{source}: expected a mapping of backend tables and an 'emotions' table")
    return data


def _check(p: dict[str, Any]) -> None:
    """At load time: the http backend has somewhere to go, and the voice table reads."""
    if p["backend"] == "http" and not p["url"]:
        raise ValueError("backend=http needs url (e.g. --set tts.url=http://127.0.0.1:8880/v1)")
    try:
        load_voices(p["voices"])
    except ValueError as e:
        raise ValueError(f"voices: {e}") from None


def pick_voice(
    table: dict[str, Any], backend: str, persona: dict[str, str], draw: float
) -> dict[str, Any] | None:
    """The voice for a persona, or None when the table has none for it."""
    voices = (((table.get(backend) or {}).get(persona["language"]) or {}).get(persona["gender"]) or {}).get(
        persona["age"]
    ) or []
    return dict(voices[int(draw * len(voices))]) if voices else None


def prosody_of(table: dict[str, Any], emotion: str) -> Prosody:
    spec = (table.get("emotions") or {}).get(emotion)
    if spec is None:
        raise Reject("no_prosody", f"emotion {emotion!r} has no entry under 'emotions' in the voice table")
    return Prosody(**spec)


@register_stage("tts", version=1, check=_check)
class TTS:
    """Synthesise each persona's utterance with a matching voice; the cut gets the audio and labels."""

    def __init__(
        self,
        backend: Literal["espeak", "flite", "piper", "http"] = "espeak",
        voices: ExistingFile | None = None,
        url: HttpUrl | None = None,
        model: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: Annotated[float, Field(gt=0)] = 60.0,
        max_retries: Annotated[int, Field(ge=0, le=10)] = 3,
    ):
        self.name = backend
        self.table = load_voices(voices)
        options = dict(
            base_url=url, model=model, api_key_env=api_key_env, timeout_s=timeout_s, max_retries=max_retries
        )
        self.backend = make_backend(backend, **options) if backend == "http" else make_backend(backend)
        self.label_source = f"llm+tts:{backend}"

    def __call__(self, cuts: list[Cut], ctx: StageContext) -> StageResult:
        result = StageResult()
        seconds = 0.0
        for cut in cuts:
            try:
                new = self.voice(cut, ctx)
            except Reject as r:
                result.rejected.append((cut, r))
                continue
            except TTSError as e:
                result.rejected.append((cut, Reject("tts_failed", f"cut {cut.id}: {e}")))
                continue
            seconds += new.duration
            result.kept.append(new)
        result.counters = {"tts_seconds": round(seconds, 3), "tts_utterances": len(result.kept)}
        return result

    def voice(self, cut: Cut, ctx: StageContext) -> MonoCut:
        persona = (cut.custom or {}).get("persona")
        if not isinstance(persona, dict):
            raise Reject("no_persona", f"cut {cut.id} has no custom.persona")
        text = cut.supervisions[0].text if cut.supervisions else None
        if not text:
            raise Reject("no_transcript", f"cut {cut.id} has nothing to say")
        voice = pick_voice(self.table, self.name, persona, unit_draw(ctx.seed, "tts_voice", cut.id))
        if voice is None:
            where = f"{self.name}.{persona['language']}.{persona['gender']}.{persona['age']}"
            raise Reject("no_voice", f"cut {cut.id}: the voice table has no {where} voice")
        prosody = prosody_of(self.table, persona["emotion"])
        synth = self.backend.synthesize(text, voice, prosody, persona["language"])
        samples = finish(synth, prosody)
        if samples.size == 0 or float(abs(samples).max()) < 1e-4:
            raise TTSError(f"{self.name} voice {voice}: silent or empty audio for {text!r}")
        path = (ctx.files_dir / f"{safe_file_name(cut.id)}.flac").resolve()
        with atomic_path(path) as tmp:
            sf.write(tmp, samples, synth.sampling_rate, format="FLAC", subtype="PCM_16")
        rec = Recording.from_file(path, recording_id=cut.id)
        old = cut.supervisions[0]
        custom = dict(old.custom or {})
        custom.update(age=persona["age"], emotion=persona["emotion"])
        custom["label_source"] = {
            **(custom.get("label_source") or {}),
            **{k: self.label_source for k in ("gender", "age", "emotion")},
        }
        voice_id = voice.get("voice") or voice.get("model")
        sup = SupervisionSegment(
            id=cut.id,
            recording_id=rec.id,
            start=0,
            duration=rec.duration,
            channel=0,
            text=text,
            language=persona["language"],
            speaker=f"tts:{self.name}:{voice_id}",
            gender=persona["gender"],
            custom=custom,
        )
        tts = {"backend": self.name, "voice": voice, "prosody": prosody.__dict__}
        if synth.unsupported:
            tts["unsupported"] = synth.unsupported
        return MonoCut(
            id=cut.id,
            start=0,
            duration=rec.duration,
            channel=0,
            recording=rec,
            supervisions=[sup],
            custom={**(cut.custom or {}), "tts": tts},
        )
