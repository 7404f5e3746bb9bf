"""Probing audio files into lhotse Recordings with reject reasons a user can act on.

lhotse's AudioLoadingError lists every backend it tried, including multi-line tracebacks of
optional decoders that are not installed; a reject record needs one line, so we reduce it to the
libsndfile message when libsndfile cannot read the file either, or to the first line otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import soundfile
from lhotse import Recording

from osum_data.corpora.rejects import MISSING_AUDIO, UNREADABLE_AUDIO
from osum_data.rejects import Reject


def probe(path: Path, recording_id: str) -> Recording:
    """A Recording for `path` (header only, audio is not decoded); Reject if absent or unreadable."""
    if not path.is_file():
        raise Reject(MISSING_AUDIO, f"audio file {str(path)!r} does not exist")
    try:
        return Recording.from_file(os.path.abspath(path), recording_id=recording_id)
    except Exception as exc:  # lhotse raises several types depending on the backend
        raise Reject(
            UNREADABLE_AUDIO, f"audio file {str(path)!r} is unreadable: {_short(path, exc)}"
        ) from exc


def _short(path: Path, exc: Exception) -> str:
    try:
        soundfile.info(str(path))
    except Exception as sf_exc:
        return str(sf_exc)
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
