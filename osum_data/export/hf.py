"""Hugging Face datasets export: Parquet shards with the `Audio` feature (FLAC bytes embedded).

`OUT/data/<split>-NNNNN-of-MMMMM.parquet`, one file per runner shard and split, written by the
`datasets` library itself (`Dataset.to_parquet`), so the features (Audio at 16 kHz, strings, the
label columns) travel in the Parquet schema; `OUT/README.md` carries the dataset card's `configs`,
so `datasets.load_dataset(OUT)` finds the splits. The audio is inside the files: the folder moves or
uploads (`huggingface-cli upload`) as it is.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from osum_data.export.engine import RUN_DIR, link, part_dirs
from osum_data.export.osum_reader import SAMPLING_RATE
from osum_data.export.samples import FormatStage, Sample
from osum_data.manifest_io import atomic_path
from osum_data.run.stage import register_stage

STAGE = "export_hf"


def features():
    from datasets import Audio, Features, Value

    return Features(
        {
            "id": Value("string"),
            "audio": Audio(sampling_rate=SAMPLING_RATE),
            "instruction": Value("string"),
            "target": Value("string"),
            "task": Value("string"),
            "transcript": Value("string"),
            "language": Value("string"),
            "speaker": Value("string"),
            "gender": Value("string"),
            "duration": Value("float64"),
            "labels": Value("string"),  # the other labels (emotion, age, events, ...) as JSON
        }
    )


@register_stage(STAGE, version=2)  # 2: files in per-call parts
class ExportHF(FormatStage):
    """Per shard and split: one Parquet file written by `datasets`."""

    stage_name = STAGE

    def __init__(self):
        import datasets

        datasets.disable_progress_bars()  # one bar per part in every worker's log is noise
        self.features = features()

    def write_split(self, samples: list[Sample], folder: Path) -> None:
        from datasets import Dataset

        data = {
            "id": [s.id for s in samples],
            "audio": [{"bytes": s.flac, "path": f"{s.name}.flac"} for s in samples],
            "instruction": [s.instruction for s in samples],
            "target": [s.target for s in samples],
            "task": [s.task for s in samples],
            "transcript": [s.transcript for s in samples],
            "language": [s.language for s in samples],
            "speaker": [s.speaker for s in samples],
            "gender": [s.gender for s in samples],
            "duration": [s.duration for s in samples],
            "labels": [json.dumps(s.labels, ensure_ascii=False, sort_keys=True) for s in samples],
        }
        with atomic_path(folder / "part.parquet") as tmp:
            Dataset.from_dict(data, features=self.features).to_parquet(str(tmp))


def gather_hf(out: Path, shards: int) -> dict[str, int]:
    """Name the Parquet parts `data/<split>-k-of-n.parquet` and write the dataset card."""
    parts: dict[str, list[Path]] = {}
    for _, d in part_dirs(out / RUN_DIR, STAGE, shards):
        for split_dir in sorted(p for p in d.iterdir() if p.is_dir()):
            if (split_dir / "part.parquet").exists():
                # Hugging Face's name for a dev set is `validation`
                split = "validation" if split_dir.name == "dev" else split_dir.name
                parts.setdefault(split, []).append(split_dir / "part.parquet")
    shutil.rmtree(out / "data", ignore_errors=True)
    for split, files in parts.items():
        for k, f in enumerate(files):
            link(f, out / "data" / f"{split}-{k:05d}-of-{len(files):05d}.parquet")
    card = ["---", "configs:", "- config_name: default", "  data_files:"]
    for split in sorted(parts):
        card += [f"  - split: {split}", f"    path: data/{split}-*"]
    card += [
        "---",
        "",
        "# osum-data export",
        "",
        "Task samples of an OSUM-style speech-understanding set: `audio` (16 kHz FLAC), `instruction`,",
        "`target` (the rendered ASR+X target), `task` (the OSUM tag key), `transcript`, speaker fields and",
        "the other labels as JSON in `labels`. Load with `datasets.load_dataset(<this folder>)`.",
        "",
    ]
    with atomic_path(out / "README.md") as tmp:
        tmp.write_text("\n".join(card), encoding="utf-8")
    import pyarrow.parquet as pq

    return {split: sum(pq.ParquetFile(f).metadata.num_rows for f in files) for split, files in parts.items()}
