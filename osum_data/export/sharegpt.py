"""ShareGPT export for LLaMA-Factory (and other chat-format trainers): `messages` + `audios`.

`OUT/<split>.jsonl`: one conversation per sample, `{"messages": [{"role": "user", "content":
"<audio>" + instruction}, {"role": "assistant", "content": target}], "audios": [path], ...}` plus
`id`, `task`, `transcript` for reference. `OUT/audio/`: 16 kHz FLAC. `OUT/dataset_info.json`: the
LLaMA-Factory dataset entries (`formatting: sharegpt`, the column and tag names), one per split, so
`dataset_dir: OUT` and `dataset: osum_train` train on it. Audio paths are absolute, or relative to OUT
with `relative` (LLaMA-Factory resolves them against `media_dir`, which defaults to `dataset_dir`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from osum_data.export.engine import RUN_DIR, concat_text, link, part_dirs, relative_or_absolute
from osum_data.export.samples import FormatStage, Sample
from osum_data.manifest_io import atomic_path, dumps
from osum_data.run.stage import register_stage

STAGE = "export_sharegpt"
AUDIO_TAG = "<audio>"  # LLaMA-Factory's audio placeholder: one per entry of `audios`


@register_stage(STAGE, version=2)  # 2: files in per-call parts
class ExportShareGPT(FormatStage):
    """Per shard and split: FLAC files and a JSONL piece of conversations."""

    stage_name = STAGE

    def __init__(self, out_dir: str, relative: bool = False):
        self.out = Path(out_dir)
        self.relative = relative

    def write_split(self, samples: list[Sample], folder: Path) -> None:
        rows = []
        for s in samples:
            with atomic_path(folder / "audio" / f"{s.name}.flac") as tmp:
                tmp.write_bytes(s.flac)
            path = relative_or_absolute(self.out / "audio" / f"{s.name}.flac", self.out, self.relative)
            rows.append(
                {
                    "messages": [
                        {"role": "user", "content": AUDIO_TAG + s.instruction},
                        {"role": "assistant", "content": s.target},
                    ],
                    "audios": [path],
                    "id": s.id,
                    "task": s.task,
                    "transcript": s.transcript,
                }
            )
        with atomic_path(folder / "data.jsonl") as tmp:
            tmp.write_text("".join(dumps(r) + "\n" for r in rows), encoding="utf-8")


def dataset_info(splits: list[str]) -> dict:
    """LLaMA-Factory's dataset_info.json entries for the exported splits."""
    return {
        f"osum_{split}": {
            "file_name": f"{split}.jsonl",
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "audios": "audios"},
            "tags": {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
            },
        }
        for split in splits
    }


def gather_sharegpt(out: Path, shards: int) -> dict[str, int]:
    shutil.rmtree(out / "audio", ignore_errors=True)
    for old in out.glob("*.jsonl"):
        old.unlink()
    pieces: dict[str, list[Path]] = {}
    for _, d in part_dirs(out / RUN_DIR, STAGE, shards):
        for split_dir in sorted(p for p in d.iterdir() if p.is_dir()):
            for f in sorted((split_dir / "audio").glob("*.flac")):
                link(f, out / "audio" / f.name)
            pieces.setdefault(split_dir.name, []).append(split_dir / "data.jsonl")
    counts = {split: concat_text(files, out / f"{split}.jsonl") for split, files in sorted(pieces.items())}
    with atomic_path(out / "dataset_info.json") as tmp:
        tmp.write_text(json.dumps(dataset_info(sorted(counts)), indent=2) + "\n", encoding="utf-8")
    return counts
