"""The `event_composite` stage: speech joined with a vocal-event clip, for VED's ASR+X samples.

OSUM's VED targets are a transcript followed by the event tag (`what a day<LAUGH>`), which needs
audio holding both. Event corpora (ESC-50, VocalSound, Nonspeech7k) have no speech and speech
corpora rarely mark events, so a transcribed cut without an event label is joined with an event clip
drawn from a side-input CutSet: before or after the speech with a short pause, or mixed over it, at
an event level relative to the speech. The composite is written as FLAC and replaces the speech cut
as a derived cut (`<id>_ev`, `custom.source_cut_id`); its supervision spans the speech inside the
composite, keeps the speaker's labels and transcript, and gets the clip's events. `custom.composite` records
where each part lies (seconds), the clip, the position, the pause and the level; `custom.lineage` holds
the speech's and the clip's source keys.

Cuts that already carry events (a labelled corpus) and untranscribed event clips (X-only `<CAPTION>`
samples) pass through unchanged.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from lhotse import SupervisionSegment
from lhotse.cut import Cut
from lhotse.supervision import AlignmentItem
from lhotse.utils import fastcopy
from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt

from osum_data.augment.bank import AudioBank, mono, playable, require_clips
from osum_data.augment.write import derived_cut, fit_peak, write_flac
from osum_data.mix.lineage import lineage_record
from osum_data.run.params import SideInput
from osum_data.run.stage import Reject, StageContext, StageResult, apply_per_cut, register_stage
from osum_data.seeded import seed_bits

Position = Literal["before", "after", "overlap"]


def events_of(cut: Cut) -> list[str]:
    if not cut.supervisions:
        return []
    return list((cut.supervisions[0].custom or {}).get("events") or [])


def event_clip(cut: Cut) -> bool:
    """A clip the stage can join with speech: audio, a length and an event label."""
    return playable(cut) and bool(events_of(cut))


def _rng(seed: int, cut_id: str) -> np.random.Generator:
    return np.random.default_rng(seed_bits(seed, "event_composite", cut_id))


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def _check(p: dict[str, Any]) -> None:
    for key in ("gap_s", "event_level_db"):
        if p[key][0] > p[key][1]:
            raise ValueError(f"{key} {list(p[key])}: the minimum is above the maximum")
    if not p["positions"]:
        raise ValueError("positions: give at least one of before, after, overlap")
    if p["events"] is None:
        raise ValueError(
            "events: no event clips to join speech with: set event_composite.events=EVENT_CUTS (cuts with "
            "custom.events, e.g. from `osum-data prepare esc50`), or drop the event_composite stage when "
            "every cut already carries its events"
        )
    require_clips(p["events"], "events", "event clips (cuts with audio and custom.events)", event_clip)


@register_stage("event_composite", version=1, check=_check)
class EventComposite:
    """Join each transcribed cut without events with an event clip from `events`."""

    def __init__(
        self,
        events: SideInput | None = None,
        positions: list[Position] = ("before", "after"),
        gap_s: tuple[NonNegativeFloat, NonNegativeFloat] = (0.15, 0.6),
        event_level_db: tuple[float, float] = (-6.0, 0.0),
        max_duration: PositiveFloat = 30.0,
        sampling_rate: PositiveInt = 16000,
        cache_mb: Annotated[float, Field(gt=0)] = 256.0,
    ):
        self.bank = (
            AudioBank(events, sampling_rate, "event clip", cache_mb, keep=event_clip)
            if events is not None
            else None
        )
        self.positions, self.gap_s, self.level_db = list(positions), gap_s, event_level_db
        self.max_duration, self.sampling_rate = max_duration, sampling_rate

    def __call__(self, cuts: list[Cut], ctx: StageContext) -> StageResult:
        result = apply_per_cut(self.compose, cuts, ctx, {})
        result.counters = {"composites": sum(1 for c in result.kept if (c.custom or {}).get("composite"))}
        return result

    def compose(self, cut: Cut, ctx: StageContext) -> Cut:
        if not cut.supervisions or events_of(cut) or not (cut.supervisions[0].text or "").strip():
            return cut  # labelled already, or an event clip (X-only)
        if self.bank is None:
            raise Reject(
                "no_event_clips",
                f"cut {cut.id} has speech but no event label, and no event clips were given "
                "(set event_composite.events=EVENT_CUTS)",
            )
        rng = _rng(ctx.seed, cut.id)
        index = int(rng.integers(len(self.bank)))
        position = self.positions[int(rng.integers(len(self.positions)))]
        gap = float(rng.uniform(*self.gap_s))
        level = float(rng.uniform(*self.level_db))
        speech = mono(cut, self.sampling_rate)
        event = self.bank.get(index)
        scaled = event * (_rms(speech) * 10 ** (level / 20) / max(_rms(event), 1e-9))
        sr = self.sampling_rate
        pause = np.zeros(round(gap * sr), dtype=np.float32)
        if position == "before":
            audio = np.concatenate([scaled, pause, speech])
            speech_at, event_at = scaled.size + pause.size, 0
        elif position == "after":
            audio = np.concatenate([speech, pause, scaled])
            speech_at, event_at = 0, speech.size + pause.size
        else:
            audio = np.zeros(max(speech.size, scaled.size), dtype=np.float32)
            event_at = int(rng.integers(max(1, speech.size - scaled.size + 1)))
            speech_at, gap = 0, 0.0
            audio[: speech.size] += speech
            audio[event_at : event_at + scaled.size] += scaled
        if audio.size / sr > self.max_duration:
            raise Reject(
                "too_long", f"cut {cut.id}: composite of {audio.size / sr:.2f} s > {self.max_duration} s"
            )
        audio, scale = fit_peak(audio.astype(np.float32))
        clip = self.bank.cuts[index]
        new_id = f"{cut.id}_ev"
        recording = write_flac(audio, sr, ctx.files_dir, new_id)
        sup = self._supervision(cut, clip, new_id, speech_at / sr, speech.size / sr)
        info = {
            "speech_cut_id": cut.id,
            "speech_start": round(speech_at / sr, 4),
            "speech_end": round((speech_at + speech.size) / sr, 4),
            "event_cut_id": clip.id,
            "event_recording_id": clip.recording_id,
            "events": events_of(clip),
            "event_start": round(event_at / sr, 4),
            "event_end": round((event_at + scaled.size) / sr, 4),
            "position": position,
            "gap_s": round(gap, 4),
            "event_level_db": round(level, 4),
            "peak_scale": round(scale, 6),
        }
        # The clip is part of the sample: its lineage joins the speech's (osum_data.mix.lineage).
        keys = lineage_record(clip)
        return derived_cut(cut, new_id, recording, [sup], {"composite": info, "lineage": keys})

    def _supervision(
        self, cut: Cut, clip: Cut, new_id: str, shift: float, speech_s: float
    ) -> SupervisionSegment:
        """The speech supervision where the speech now lies in the composite (not over the event
        clip and the pause: an aligner or a segmenter reading it must find speech), with the clip's
        events added and word times moved by where the speech now starts."""
        sup = cut.supervisions[0]
        custom = dict(sup.custom or {})
        clip_custom = clip.supervisions[0].custom or {}
        custom["events"] = events_of(clip)
        sources = dict(custom.get("label_source") or {})
        sources["events"] = (clip_custom.get("label_source") or {}).get("events", "corpus")
        custom["label_source"] = sources
        alignment = None
        if sup.alignment:
            alignment = {
                kind: [AlignmentItem(a.symbol, a.start + shift, a.duration, a.score) for a in items]
                for kind, items in sup.alignment.items()
            }
        return fastcopy(sup, id=new_id, start=shift, duration=speech_s, custom=custom, alignment=alignment)
