"""Audio sanity checks and the sampling-rate / channel policy (stages `check_audio`, `audio_policy`).

Decoders are forgiving in ways that poison training data: libsndfile silently reads a truncated WAV
as a shorter file, float WAVs may hold NaN, a text file named .wav fails deep inside a data loader.
`check_audio` decodes every cut once and turns each of these into a reject with a reason.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import soundfile as sf
from lhotse import Recording
from lhotse.cut import Cut, MonoCut
from lhotse.utils import fastcopy
from pydantic import Field, PositiveInt

from osum_data.label.audio_windows import audio_windows
from osum_data.manifest_io import atomic_path, safe_file_name
from osum_data.run.stage import Reject, StageContext, per_cut_stage


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
def check_audio(cut: Cut, min_peak: Annotated[float, Field(ge=0)] = 1e-4) -> Cut:
    """Reject cuts whose audio is missing, truncated, undecodable, empty, non-finite or silent."""
    if not cut.has_recording:
        raise Reject("no_audio", f"cut {cut.id} has no recording")
    for path in _source_paths(cut):
        if not path.exists():
            raise Reject("missing_file", f"{path} does not exist")
        if path.is_dir():
            raise Reject("unreadable_audio", f"{path} is a directory, not an audio file")
        trunc = wav_truncation(path)
        if trunc:
            raise Reject("truncated_audio", f"{path}: {trunc}")
    size = bad = 0
    peak = 0.0
    try:
        for _, audio in audio_windows(cut):  # long recordings a window at a time
            size += audio.size
            bad += int(np.size(audio) - np.count_nonzero(np.isfinite(audio)))
            if audio.size:
                peak = max(peak, float(np.max(np.abs(np.nan_to_num(audio, posinf=0.0, neginf=0.0)))))
    except Exception as e:  # lhotse wraps backend errors; the message names the file
        raise Reject("unreadable_audio", f"{type(e).__name__}: {str(e).splitlines()[0]}") from None
    if size == 0:
        raise Reject("empty_audio", f"cut {cut.id}: 0 samples")
    if bad:
        raise Reject("non_finite_samples", f"cut {cut.id}: {bad} NaN/Inf samples")
    if peak < min_peak:
        raise Reject("silent_audio", f"cut {cut.id}: peak {peak:.2e} < {min_peak}")
    return cut


def _check_rates(params: dict) -> None:
    if params["min_sampling_rate"] > params["sampling_rate"]:
        lo, hi = params["min_sampling_rate"], params["sampling_rate"]
        raise ValueError(f"min_sampling_rate {lo} is above sampling_rate {hi}")


@per_cut_stage("audio_policy", version=2, check=_check_rates)
def audio_policy(
    cut: Cut,
    ctx: StageContext,
    sampling_rate: PositiveInt = 16000,
    min_sampling_rate: PositiveInt = 16000,
    channels: Literal["reject", "first", "downmix"] = "reject",
) -> Cut:
    """Bring every cut to `sampling_rate` (lazily: lhotse records the resampling, nothing is
    written) and mono.

    Sources below `min_sampling_rate` are rejected by default: upsampled 8 kHz telephone audio
    lacks the upper band the model sees elsewhere. Set `min_sampling_rate: 8000` to keep it.
    `channels`: 'reject' multi-channel cuts, take the 'first' channel, or 'downmix' (the mean of
    the channels, written as 16-bit FLAC at `sampling_rate` into the shard's files directory).
    """
    source_rate = cut.sampling_rate
    if source_rate < min_sampling_rate:
        raise Reject(
            "low_sampling_rate", f"cut {cut.id}: {source_rate} Hz < policy minimum {min_sampling_rate} Hz"
        )
    n_channels = len(cut.channel) if isinstance(cut.channel, list) else 1
    if n_channels > 1:
        if channels == "reject":
            raise Reject("multi_channel", f"cut {cut.id}: {n_channels} channels; the policy takes mono")
        if channels == "downmix":
            return downmix(cut, ctx.files_dir, sampling_rate)
        cut = fastcopy(cut.to_mono()[0], id=cut.id)  # keep the id: every input id must end somewhere
    if source_rate != sampling_rate:
        cut = cut.resample(sampling_rate)
        cut.custom = {**(cut.custom or {}), "source_sampling_rate": source_rate}
    return cut


def downmix(cut: Cut, out_dir: Path, sampling_rate: int) -> MonoCut:
    """The mean of a multi-channel cut's channels as a new mono FLAC recording; supervisions,
    labels and custom fields carry over, and `custom.downmixed_from` says where it came from."""
    src = cut.resample(sampling_rate) if cut.sampling_rate != sampling_rate else cut
    path = out_dir / f"{safe_file_name(cut.id)}.flac"
    with (
        atomic_path(path) as tmp,
        sf.SoundFile(tmp, "w", samplerate=sampling_rate, channels=1, format="FLAC", subtype="PCM_16") as out,
    ):
        for _, audio in audio_windows(src):  # long recordings a window at a time
            out.write(audio.mean(axis=0))
    rec = Recording.from_file(path, recording_id=f"{cut.id}#downmix")
    sups = [fastcopy(s, recording_id=rec.id, channel=0) for s in cut.supervisions]
    custom = {
        **(cut.custom or {}),
        "downmixed_from": {
            "recording_id": cut.recording_id,
            "channels": list(cut.channel),
            "start": cut.start,
        },
    }
    if cut.sampling_rate != sampling_rate:
        custom["source_sampling_rate"] = cut.sampling_rate
    return MonoCut(
        id=cut.id,
        start=0.0,
        duration=rec.duration,
        channel=0,
        recording=rec,
        supervisions=sups,
        custom=custom,
    )
