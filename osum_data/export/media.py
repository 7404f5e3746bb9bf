"""The audio side of every export format: a cut's samples as 16 kHz mono int16, as WAV or FLAC
bytes, or the source file itself when it already is exactly that; and why a cut's audio cannot be
used (a span outside its recording, a missing file) before lhotse pads or fails obscurely.

Shared by the OSUM stage and the `FormatStage` formats, so no format reaches into another's module.
"""

from __future__ import annotations

import io
import os
import wave

import numpy as np
import soundfile as sf
from lhotse import MonoCut
from lhotse.cut import Cut

from osum_data.export.osum_reader import SAMPLING_RATE
from osum_data.manifest_io import safe_file_name

# lhotse already fixes small length drift; anything beyond this (samples at 16 kHz) is a bad cut.
LENGTH_TOLERANCE = 16
SPAN_TOLERANCE = LENGTH_TOLERANCE / SAMPLING_RATE  # seconds a cut may end past its recording
safe_name = safe_file_name  # the name a cut id gets as an audio file and as a tar member prefix


def wav_bytes(samples: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> bytes:
    """Canonical mono int16 WAV (plain 44-byte header, no metadata): same samples, same bytes."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sampling_rate)
        w.writeframes(np.asarray(samples, dtype="<i2").tobytes())
    return buf.getvalue()


def flac_bytes(samples: np.ndarray) -> bytes:
    """16 kHz mono 16-bit FLAC (lossless, about half of the WAV)."""
    buf = io.BytesIO()
    sf.write(buf, samples, SAMPLING_RATE, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def to_int16(audio: np.ndarray) -> np.ndarray:
    """Float [-1, 1) -> int16; exact for audio that came from int16 (lhotse divides by 32768)."""
    return np.clip(np.rint(audio * 32768.0), -32768, 32767).astype(np.int16)


def referenced_wav(cut: Cut) -> str | None:
    """Absolute path of the file to reference in place, or None if the cut must be materialised.

    Only a whole, untransformed, single-file 16 kHz mono PCM_16 WAV qualifies: that is what the
    trainer can open directly and it holds exactly the cut's samples.
    """
    if not isinstance(cut, MonoCut) or not cut.has_recording:
        return None
    rec = cut.recording
    if rec.transforms or len(rec.sources) != 1 or rec.sources[0].type != "file":
        return None
    if rec.sampling_rate != SAMPLING_RATE or rec.num_channels != 1:
        return None
    if abs(cut.start) * SAMPLING_RATE >= 0.5 or cut.num_samples != rec.num_samples:
        return None
    path = os.path.abspath(rec.sources[0].source)
    try:
        info = sf.info(path)
    except (OSError, RuntimeError):
        return None  # materialising will fail too and say why
    ok = (info.format, info.subtype, info.channels, info.samplerate, info.frames) == (
        "WAV",
        "PCM_16",
        1,
        SAMPLING_RATE,
        rec.num_samples,
    )
    return path if ok else None


def render_16k(cut: Cut) -> np.ndarray:
    """The cut's audio as 16 kHz mono int16, of exactly `compute_num_samples(duration, 16k)`;
    a missing source file is named plainly, and no samples at all is an error."""
    check_sources_exist(cut)
    resampled = cut.resample(SAMPLING_RATE)  # lazy; a plain copy when already at 16 kHz
    audio = np.asarray(resampled.load_audio(), dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=0)  # multi-channel cuts are downmixed; OSUM is mono
    n = resampled.num_samples
    if abs(len(audio) - n) > LENGTH_TOLERANCE:
        raise ValueError(f"loaded {len(audio)} samples, expected {n}")
    if n == 0:
        raise ValueError("no audio samples (zero duration)")
    audio = np.pad(audio[:n], (0, n - min(n, len(audio))))
    return to_int16(audio)


def span_problem(cut: Cut) -> str | None:
    """Why a cut's span is not inside its recording (negative start, end past the recording), or
    None. Lhotse would pad or shift such a cut silently instead of failing."""
    if not isinstance(cut, MonoCut):
        return None
    if cut.start < 0:
        return f"bad span: cut starts at {cut.start:g} s, before its recording"
    if cut.has_recording and cut.end > cut.recording.duration + SPAN_TOLERANCE:
        return f"bad span: cut ends at {cut.end:g} s, after its recording's {cut.recording.duration:g} s"
    return None


def check_sources_exist(cut: Cut) -> None:
    """Name a missing source file plainly, instead of lhotse's page-long list of backend errors."""
    rec = cut.recording if isinstance(cut, MonoCut) and cut.has_recording else None
    for src in rec.sources if rec is not None else ():
        if src.type == "file" and not os.path.exists(src.source):
            raise FileNotFoundError(f"no such file: {src.source}")


def brief(e: BaseException, limit: int = 400) -> str:
    """`Type: message`, cut to its first two lines and `limit` characters (lhotse errors can
    carry whole tracebacks; rejects.jsonl.gz should stay readable)."""
    text = " ".join(str(e).strip().splitlines()[:2])
    text = f"{type(e).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
