"""Audio sanity checks and the sampling-rate / channel policy (stages `check_audio`, `audio_policy`).

Decoders are forgiving in ways that poison training data: libsndfile silently reads a truncated WAV
as a shorter file, float WAVs may hold NaN, a text file named .wav fails deep inside a data loader.
`check_audio` decodes every cut once and turns each of these into a reject with a reason.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from lhotse.cut import Cut
from lhotse.utils import fastcopy

from osum_data.run.stage import Reject, per_cut_stage


def wav_truncation(path: Path) -> str | None:
    """Describe how a RIFF/WAVE file is truncated (data chunk declares more bytes than the file
    holds), or None when it is whole or not a WAV."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return None
        fmt = "<I" if head[:4] == b"RIFF" else ">I"
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk_id, chunk_size = f.read(4), struct.unpack(fmt, f.read(4))[0]
            if chunk_id == b"data":
                available = size - pos - 8
                if chunk_size not in (0, 0xFFFFFFFF) and chunk_size > available:
                    return f"data chunk declares {chunk_size} bytes, file holds {available}"
                return None
            pos += 8 + chunk_size + (chunk_size & 1)
    return "no data chunk"


def _source_paths(cut: Cut) -> list[Path]:
    rec = getattr(cut, "recording", None)
    if rec is None:
        return []
    return [Path(s.source) for s in rec.sources if s.type == "file"]


@per_cut_stage("check_audio")
def check_audio(cut: Cut, min_peak: float = 1e-4) -> Cut:
    """Reject cuts whose audio is missing, truncated, undecodable, empty, non-finite or silent."""
    if not cut.has_recording:
        raise Reject("no_audio", f"cut {cut.id} has no recording")
    for path in _source_paths(cut):
        if not path.exists():
            raise Reject("missing_file", f"{path} does not exist")
        trunc = wav_truncation(path)
        if trunc:
            raise Reject("truncated_audio", f"{path}: {trunc}")
    try:
        audio = cut.load_audio()
    except Exception as e:  # lhotse wraps backend errors; the message names the file
        raise Reject("unreadable_audio", f"{type(e).__name__}: {str(e).splitlines()[0]}") from None
    if audio.size == 0:
        raise Reject("empty_audio", f"cut {cut.id}: 0 samples")
    bad = int(np.size(audio) - np.count_nonzero(np.isfinite(audio)))
    if bad:
        raise Reject("non_finite_samples", f"cut {cut.id}: {bad} NaN/Inf samples")
    peak = float(np.max(np.abs(audio)))
    if peak < min_peak:
        raise Reject("silent_audio", f"cut {cut.id}: peak {peak:.2e} < {min_peak}")
    return cut


@per_cut_stage("audio_policy")
def audio_policy(
    cut: Cut,
    sampling_rate: int = 16000,
    min_sampling_rate: int = 16000,
    channels: str = "reject",
) -> Cut:
    """Bring every cut to `sampling_rate` (lazily: lhotse records the resampling, nothing is
    written) and mono.

    Sources below `min_sampling_rate` are rejected by default: upsampled 8 kHz telephone audio
    lacks the upper band the model sees elsewhere. Set `min_sampling_rate: 8000` to keep it.
    `channels`: 'reject' multi-channel cuts or take the 'first' channel. (Lhotse's downmix holds the
    mixed audio in memory inside the manifest, so a downmix needs a materialising stage; not here.)
    """
    if channels not in ("reject", "first"):
        raise ValueError(f"channels must be 'reject' or 'first'; got {channels!r}")
    n_channels = len(cut.channel) if isinstance(cut.channel, list) else 1
    if n_channels > 1:
        if channels == "reject":
            raise Reject("multi_channel", f"cut {cut.id}: {n_channels} channels; the policy takes mono")
        cut = fastcopy(cut.to_mono()[0], id=cut.id)  # keep the id: every input id must end somewhere
    source_rate = cut.sampling_rate
    if source_rate < min_sampling_rate:
        raise Reject(
            "low_sampling_rate", f"cut {cut.id}: {source_rate} Hz < policy minimum {min_sampling_rate} Hz"
        )
    if source_rate != sampling_rate:
        cut = cut.resample(sampling_rate)
        cut.custom = {**(cut.custom or {}), "source_sampling_rate": source_rate}
    return cut
