"""Audio tracks of video containers (MELD and RAVDESS .mp4, VoxCeleb2 .m4a), demuxed once to FLAC.

lhotse 1.33 routes every .mp4/.m4a path to its torchaudio-FFmpeg backend, which needs
`torchaudio.io`; torchaudio 2.9 removed it, so with our torchaudio (2.11) lhotse cannot read these
files at all, not even through a `command` source. torchcodec (FFmpeg underneath) can decode them,
so importers decode each file once here and point the Recording at a FLAC copy under
OUT_DIR/audio/. Channels and sampling rate are kept as they are; downmixing is a later stage's job.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
from lhotse.audio.backend import (
    SUPPORTED_VIDEO_EXTENSIONS,
    torchaudio_ffmpeg_backend_available,
    torchcodec_load,
)

from osum_data.corpora.rejects import EMPTY_AUDIO, MISSING_AUDIO, NO_AUDIO_TRACK, UNREADABLE_AUDIO
from osum_data.rejects import Reject

FFMPEG_HINT = "torchcodec needs FFmpeg's shared libraries (Debian/Ubuntu: apt-get install ffmpeg)"


def needs_demux(path: Path) -> bool:
    """True for containers lhotse cannot read with the installed torchaudio."""
    return path.suffix.lower() in SUPPORTED_VIDEO_EXTENSIONS and not torchaudio_ffmpeg_backend_available()


def demux_to_flac(src: Path, dest: Path) -> Path:
    """Write src's audio track to dest (FLAC, 16-bit); an existing dest is reused (atomic writes)."""
    if dest.is_file():
        return dest
    if not src.is_file():
        raise Reject(MISSING_AUDIO, f"audio file {str(src)!r} does not exist")
    try:
        samples, rate = torchcodec_load(str(src))
    except Exception as exc:  # torchcodec raises RuntimeError/ValueError/OSError by cause
        message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if "audio stream" in message.lower():
            raise Reject(NO_AUDIO_TRACK, f"{str(src)!r} has no audio stream: {message}") from exc
        hint = f" ({FFMPEG_HINT})" if "ffmpeg" in message.lower() or "libtorchcodec" in message else ""
        raise Reject(UNREADABLE_AUDIO, f"cannot decode the audio of {str(src)!r}: {message}{hint}") from exc
    if samples.size == 0:
        raise Reject(EMPTY_AUDIO, f"the audio track of {str(src)!r} has no samples")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    try:
        sf.write(str(tmp), np.clip(samples.T, -1.0, 1.0), int(rate), format="FLAC", subtype="PCM_16")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest
