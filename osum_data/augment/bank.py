"""A set of clips to draw from (noise, room impulse responses, event clips), decoded once per worker.

The manifest is a side input (any CutSet: MUSAN, RIRS_NOISES, a folder imported with `prepare tsv`).
Lengths are known from the manifest without decoding, so every random choice (which clip, which
offset) is made before any audio is read; the audio of a clip is decoded, resampled and downmixed on
first use and kept in a byte-bounded LRU, so a worker decodes each clip once, however many cuts use it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import numpy as np
from lhotse.cut import Cut
from lhotse.utils import compute_num_samples

from osum_data.run.params import SideInput


def mono(cut: Cut, sampling_rate: int) -> np.ndarray:
    """The cut's audio at `sampling_rate` as float32 mono (multi-channel audio is averaged)."""
    audio = cut.resample(sampling_rate) if cut.sampling_rate != sampling_rate else cut
    samples = np.asarray(audio.load_audio(), dtype=np.float32)
    return samples.mean(axis=0) if samples.shape[0] > 1 else samples[0]


def fit_length(samples: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad to exactly n samples (decoders and resamplers may be off by a sample)."""
    if samples.shape[-1] >= n:
        return samples[..., :n]
    return np.pad(samples, (0, n - samples.shape[-1]))


def playable(cut: Cut) -> bool:
    """A clip a bank can draw from: it has audio and a length."""
    return cut.duration > 0 and cut.has_recording


def require_clips(
    side: SideInput | None, key: str, what: str, keep: Callable[[Cut], bool] = playable
) -> None:
    """For a stage's `check`: a ValueError (one line naming the parameter and the file) when the
    manifest holds no clip passing `keep` (a module-level function), so the run stops at load time
    instead of every worker failing to build its bank."""
    if side is not None and not side.planned and not side.has_cut(keep):
        raise ValueError(f"{key}: side-input manifest {str(side.path)!r} holds no usable {what}")


class AudioBank:
    """The clips of a side-input CutSet at one sampling rate. `keep` filters the cuts (e.g. event
    clips with an event label); the order is the manifest's, so an index means the same clip in
    every worker."""

    def __init__(
        self,
        side: SideInput,
        sampling_rate: int,
        what: str,
        max_cache_mb: float = 512.0,
        keep: Callable[[Cut], bool] | None = None,
    ):
        self.what = what
        self.sampling_rate = sampling_rate
        self.cuts = [c for c in side.cuts() if playable(c) and (keep is None or keep(c))]
        if not self.cuts:
            raise ValueError(f"{what} manifest {str(side.path)!r} holds no usable cuts (with audio)")
        self.lengths = [compute_num_samples(c.duration, sampling_rate) for c in self.cuts]
        self.max_bytes = int(max_cache_mb * 2**20)
        self.cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.bytes = 0
        self.decodes = 0

    def __len__(self) -> int:
        return len(self.cuts)

    def get(self, index: int) -> np.ndarray:
        """Clip `index` as float32 mono, exactly `lengths[index]` samples (decoded once, cached)."""
        hit = self.cache.get(index)
        if hit is not None:
            self.cache.move_to_end(index)
            return hit
        samples = fit_length(mono(self.cuts[index], self.sampling_rate), self.lengths[index])
        samples.setflags(write=False)
        self.decodes += 1
        self.cache[index] = samples
        self.bytes += samples.nbytes
        while self.bytes > self.max_bytes and len(self.cache) > 1:
            _, old = self.cache.popitem(last=False)
            self.bytes -= old.nbytes
        return samples

    def segment(self, index: int, offset: int, n: int) -> tuple[np.ndarray, bool]:
        """n samples of clip `index` from `offset`; a clip shorter than that is repeated (looped)."""
        clip = self.get(index)
        if offset + n <= clip.size:
            return clip[offset : offset + n], False
        reps = int(np.ceil((offset + n) / clip.size))
        return np.tile(clip, reps)[offset : offset + n], True
