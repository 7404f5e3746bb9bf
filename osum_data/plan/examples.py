"""One sample of each run to listen to and read: what a plan (`run-all`, the demo) leaves in
`OUT/examples/` so a person can check a run's output without a manifest viewer."""

from __future__ import annotations

import json
from pathlib import Path

from osum_data.manifest_io import read_jsonl


def write_example(cuts: Path, out_dir: Path, name: str) -> Path | None:
    """One sample of a run's output as a WAV to listen to, next to a .txt with its task, instruction
    and target: the first sample made by the run (an augmented copy, a composite) if there is one,
    else the first sample."""
    import soundfile as sf
    from lhotse.serialization import deserialize_item

    first = None
    for d in read_jsonl(cuts):
        first = first or d
        if (d.get("custom") or {}).get("source_cut_id"):
            first = d
            break
    if first is None:
        return None
    cut = deserialize_item(first)
    out_dir.mkdir(parents=True, exist_ok=True)
    audio = cut.load_audio()
    sf.write(out_dir / f"{name}.wav", audio.mean(axis=0), cut.sampling_rate, subtype="PCM_16")
    custom = cut.custom or {}
    lines = [f"id: {cut.id}", f"task: {custom.get('task')}", f"instruction: {custom.get('instruction')}"]
    lines += [f"target: {custom.get('target')}"]
    for key in ("augment", "composite"):
        if key in custom:
            lines.append(f"{key}: {json.dumps(custom[key], ensure_ascii=False)}")
    (out_dir / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out_dir / f"{name}.wav"
