"""Writing an audio stage's output: a FLAC file in the shard's files directory and the cut over it.

The derived cut keeps the source's supervisions (labels, transcript, alignment; times moved or
scaled as the audio was) and custom fields, and names its source in `custom.source_cut_id`, as the
stage contract asks of every cut a stage makes from another, and everything it is made of in
`custom.lineage` (osum_data.mix.lineage).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from lhotse import AudioSource, Recording, SupervisionSegment
from lhotse.cut import Cut, MonoCut
from lhotse.utils import fastcopy

from osum_data.manifest_io import atomic_path, safe_file_name

PEAK = 0.999


def fit_peak(samples: np.ndarray) -> tuple[np.ndarray, float]:
    """Scale down audio that would clip in 16-bit PCM; returns (audio, scale applied). A common
    scale keeps every ratio (SNR, event level) as it was mixed."""
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if peak <= PEAK:
        return samples, 1.0
    scale = PEAK / peak
    return (samples * scale).astype(np.float32), scale


def write_flac(samples: np.ndarray, sampling_rate: int, files_dir: Path, cut_id: str) -> Recording:
    """16-bit FLAC named after the cut id, written atomically; the Recording over it."""
    path = Path(files_dir) / f"{safe_file_name(cut_id)}.flac"
    with atomic_path(path) as tmp:
        sf.write(tmp, samples, sampling_rate, format="FLAC", subtype="PCM_16")
    # What we wrote is known: no need to open the file again to describe it.
    return Recording(
        id=cut_id,
        sources=[AudioSource(type="file", channels=[0], source=str(path))],
        sampling_rate=sampling_rate,
        num_samples=samples.shape[-1],
        duration=samples.shape[-1] / sampling_rate,
    )


def derived_cut(
    source: Cut,
    new_id: str,
    recording: Recording,
    supervisions: list[SupervisionSegment] | None = None,
    custom: dict[str, Any] | None = None,
) -> MonoCut:
    """A mono cut over `recording`, linked to `source`. Supervisions default to the source's,
    moved onto the new recording (their times relative to the cut are unchanged)."""
    if supervisions is None:
        supervisions = [
            fastcopy(s, id=f"{s.id}{new_id[len(source.id) :]}" if new_id.startswith(source.id) else new_id)
            for s in source.supervisions
        ]
    sups = [fastcopy(s, recording_id=recording.id, channel=0) for s in supervisions]
    from osum_data.mix.lineage import lineage_record

    # The whole chain of sources (source_cut_id names only the last one).
    keys = sorted(set(lineage_record(source)) | set((custom or {}).get("lineage") or []))
    return MonoCut(
        id=new_id,
        start=0.0,
        duration=recording.duration,
        channel=0,
        recording=recording,
        supervisions=sups,
        custom={**(source.custom or {}), **(custom or {}), "source_cut_id": source.id, "lineage": keys},
    )
