"""The `augment` stage: N noisy / reverberant copies of every cut, written as FLAC (DESIGN section 3).

OSUM v2 doubled its gender and age data with noise-augmented copies; `copies: 1` with the original
kept does the same. Each copy is a derived cut (`<id>_aug<k>`, `custom.source_cut_id`) whose
`custom.augment` says exactly how it was made: source cut, seed, and per step the noise cut and
recording, offset (seconds and samples into the noise cut), SNR and the gain applied, the RIR used,
speed factor, gain, and the final peak scale. The seed is a hash of (pipeline seed, cut id, copy),
so the same configuration writes the same bytes whatever the shard size or worker count.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from lhotse.cut import Cut
from lhotse.utils import fastcopy
from pydantic import Field, PositiveFloat, PositiveInt

from osum_data.augment.bank import AudioBank, require_clips
from osum_data.augment.transforms import build_chain, run_chain
from osum_data.augment.write import derived_cut, fit_peak, write_flac
from osum_data.label.audio_check import downmix
from osum_data.run.params import SideInput
from osum_data.run.stage import Reject, StageContext, StageResult, apply_per_cut, register_stage
from osum_data.seeded import seed_bits

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


def copy_seed(seed: int, cut_id: str, copy: int) -> int:
    """The seed of one copy: fixed by the pipeline seed, the source cut id and the copy number."""
    return seed_bits(seed, "augment", cut_id, copy) >> 1  # 63 bits: a non-negative int64


def _check(p: dict[str, Any]) -> None:
    for key in ("snr_db", "gain_db"):
        if p[key] is not None and p[key][0] > p[key][1]:
            raise ValueError(f"{key} {list(p[key])}: the minimum is above the maximum")
    if p["copies"] > 0 and p["noise"] is None and p["rir"] is None and not p["gain_db"] and not p["speed"]:
        raise ValueError(
            "nothing to augment with: set noise=NOISE_CUTS and/or rir=RIR_CUTS (any cuts manifest, e.g. "
            "from `osum-data prepare musan` or `prepare tsv` of a folder of noise files), gain_db or "
            "speed; or copies=0 to skip augmentation"
        )
    if p["copies"] == 0 and not p["keep_original"]:
        raise ValueError("copies=0 with keep_original=false would drop every cut")
    require_clips(p["noise"], "noise", "noise cuts (cuts with audio and a duration)")
    require_clips(p["rir"], "rir", "impulse responses (cuts with audio and a duration)")


@register_stage("augment", version=1, check=_check)
class Augment:
    """Noise (SNR range), RIR convolution, gain and speed, `copies` times per cut."""

    def __init__(
        self,
        noise: SideInput | None = None,
        rir: SideInput | None = None,
        copies: Annotated[int, Field(ge=0, le=100)] = 1,
        keep_original: bool = True,
        snr_db: tuple[float, float] = (5.0, 20.0),
        noise_p: Probability = 1.0,
        rir_p: Probability = 0.5,
        gain_db: tuple[float, float] | None = None,
        speed: list[PositiveFloat] | None = None,
        sampling_rate: PositiveInt = 16000,
        channels: Literal["downmix", "first", "reject"] = "downmix",
        cache_mb: PositiveFloat = 512.0,
        suffix: str = "aug",
    ):
        self.noise = AudioBank(noise, sampling_rate, "noise", cache_mb) if noise is not None else None
        self.rir = AudioBank(rir, sampling_rate, "rir", cache_mb) if rir is not None else None
        self.steps = build_chain(self.noise, self.rir, snr_db, noise_p, rir_p, gain_db, speed)
        self.copies, self.keep_original = copies, keep_original
        self.sampling_rate, self.channels, self.suffix = sampling_rate, channels, suffix

    def __call__(self, cuts: list[Cut], ctx: StageContext) -> StageResult:
        before = self._decodes()
        result = apply_per_cut(self.augment_cut, cuts, ctx, {})
        made = sum(1 for c in result.kept if (c.custom or {}).get("augment"))
        result.counters = {"copies": made, **{k: v - before[k] for k, v in self._decodes().items()}}
        return result

    def _decodes(self) -> dict[str, int]:
        return {f"{b.what}_decodes": b.decodes for b in (self.noise, self.rir) if b is not None}

    def source_audio(self, cut: Cut) -> np.ndarray:
        audio = cut.resample(self.sampling_rate) if cut.sampling_rate != self.sampling_rate else cut
        samples = np.asarray(audio.load_audio(), dtype=np.float32)
        if samples.shape[0] > 1:
            if self.channels == "reject":
                raise Reject(
                    "multi_channel", f"cut {cut.id}: {samples.shape[0]} channels; augment takes mono"
                )
            return samples[0] if self.channels == "first" else samples.mean(axis=0)
        return samples[0]

    def augment_cut(self, cut: Cut, ctx: StageContext) -> list[Cut]:
        if not cut.has_recording:
            raise Reject("no_audio", f"cut {cut.id} has no recording")
        samples = self.source_audio(cut)
        out: list[Cut] = []
        if self.keep_original:
            multi = isinstance(cut.channel, list) and len(cut.channel) > 1
            if multi and self.channels == "downmix":
                out.append(downmix(cut, ctx.files_dir, self.sampling_rate))
            elif multi:
                out.append(fastcopy(cut.to_mono()[0], id=cut.id))
            else:
                out.append(cut)
        for k in range(self.copies):
            out.append(self.make_copy(cut, samples, k, ctx))
        return out

    def make_copy(self, cut: Cut, samples: np.ndarray, k: int, ctx: StageContext) -> Cut:
        seed = copy_seed(ctx.seed, cut.id, k)
        audio, applied = run_chain(self.steps, samples, self.sampling_rate, seed)
        audio, scale = fit_peak(audio)
        new_id = f"{cut.id}_{self.suffix}{k}"
        recording = write_flac(audio, self.sampling_rate, ctx.files_dir, new_id)
        factor = applied.get("speed", {}).get("factor", 1.0)
        sups = None
        if factor != 1.0:
            sups = [
                fastcopy(
                    s.perturb_speed(factor, self.sampling_rate, affix_id=False), id=f"{s.id}_{self.suffix}{k}"
                )
                for s in cut.supervisions
            ]
        provenance = {
            "source_cut_id": cut.id,
            "seed": seed,
            "copy": k,
            "sampling_rate": self.sampling_rate,
            "steps": list(applied),
            **{name: self._describe(name, params) for name, params in applied.items()},
            "peak_scale": round(scale, 6),
        }
        return derived_cut(cut, new_id, recording, sups, {"augment": provenance})

    def _describe(self, step: str, p: dict[str, Any]) -> dict[str, Any]:
        """A step's parameters with clip indexes turned into cut and recording ids."""
        if step == "noise":
            clip = self.noise.cuts[p["index"]]
            return {
                "cut_id": clip.id,
                "recording_id": clip.recording_id,
                "offset": p["offset"] / self.sampling_rate,
                "offset_samples": p["offset"],
                "looped": p["looped"],
                "snr_db": round(p["snr_db"], 4),
                "gain": p["gain"],
            }
        if step == "rir":
            clip = self.rir.cuts[p["index"]]
            return {"cut_id": clip.id, "recording_id": clip.recording_id, "direct_index": p["direct_index"]}
        if step == "gain":
            return {"gain_db": round(float(20 * np.log10(p["amplitude_ratio"])), 4)}
        return {"factor": p["factor"]}
