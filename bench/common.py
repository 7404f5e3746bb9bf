"""Shared set-up for the benchmarks: a manifest of N cuts over the real demo prompts."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from lhotse import Recording, SupervisionSegment

from osum_data.demo import SOUNDS_DIR, asterisk_transcripts
from osum_data.manifest_io import write_jsonl


def demo_manifest(path: Path, n: int) -> Path:
    """n cuts cycling over the real prompts (distinct ids, shared audio files)."""
    texts = asterisk_transcripts()
    base = []
    for name in sorted(texts):
        wav = SOUNDS_DIR / f"{name}.wav"
        if not wav.exists():
            continue
        rec = Recording.from_file(wav, recording_id=name.replace("/", "_"))
        cut = rec.to_cut()
        cut.supervisions = [
            SupervisionSegment(
                id=cut.id,
                recording_id=rec.id,
                start=0,
                duration=rec.duration,
                text=texts[name],
                language="en",
                speaker="allison",
                gender="female",
            )
        ]
        base.append(cut.to_dict())
    items = []
    for i in range(n):
        d = json.loads(json.dumps(base[i % len(base)]))
        d["id"] = d["supervisions"][0]["id"] = f"{d['id']}-{i:07d}"
        items.append(d)
    write_jsonl(path, items)
    return path


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
