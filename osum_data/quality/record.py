"""Where a quality measure is stored on a cut, and how a measure reads the audio it needs."""

from __future__ import annotations

from typing import Any

import numpy as np
from lhotse.cut import Cut
from lhotse.utils import fastcopy

SAMPLE_RATE = 16000  # the rate every model-based measure works at


def _holder(cut: Cut) -> dict[str, Any]:
    return (cut.supervisions[0].custom if cut.supervisions else cut.custom) or {}


def set_measures(cut: Cut, values: dict[str, float], source: str) -> Cut:
    """A copy of `cut` with `values` in `custom.quality` and `source` as the label source of each.
    Measures live on the first supervision (where every label lives, DESIGN §3); a cut without
    supervisions (an event clip) keeps them in its own `custom`."""
    custom = dict(_holder(cut))
    custom["quality"] = {**(custom.get("quality") or {}), **values}
    custom["label_source"] = {
        **(custom.get("label_source") or {}),
        **{f"quality.{k}": source for k in values},
    }
    if cut.supervisions:
        sup = fastcopy(cut.supervisions[0], custom=custom)
        return fastcopy(cut, supervisions=[sup, *cut.supervisions[1:]])
    return fastcopy(cut, custom=custom)


def measures_of(cut: Cut) -> dict[str, float]:
    """The quality measures recorded on `cut` (empty if none)."""
    return dict(_holder(cut).get("quality") or {})


def source_of(cut: Cut, name: str) -> str | None:
    return (_holder(cut).get("label_source") or {}).get(f"quality.{name}")


def mono(cut: Cut, sampling_rate: int | None = SAMPLE_RATE) -> np.ndarray:
    """The cut's audio as float32 mono (channels averaged) at `sampling_rate` (None: native)."""
    if sampling_rate is not None and cut.sampling_rate != sampling_rate:
        cut = cut.resample(sampling_rate)
    audio = cut.load_audio()
    audio = audio.mean(axis=0) if audio.ndim == 2 else audio
    return np.ascontiguousarray(audio, dtype=np.float32)


def stage_threads(default: int = 1) -> int:
    """CPU threads this stage may use: the CPUs Ray assigned to this actor (the stage's
    `resources.num_cpus`), or `default` outside Ray."""
    try:
        import ray

        if ray.is_initialized():
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
            if cpus:
                return max(1, int(cpus))
    except Exception:  # not inside a Ray worker
        pass
    return default
