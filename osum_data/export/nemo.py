"""NeMo export: speechlm2-style Lhotse cuts and a NeMo JSON manifest, audio as 16 kHz FLAC.

`OUT/<split>_cuts.jsonl`: one cut per sample whose supervision text is the target and whose
`context` (a custom field, `cut.context`) is the instruction, as NeMo's speechlm2 (SALM) data path
reads prompt + answer from Lhotse cuts; the transcript and task key stay in `custom`.
`OUT/<split>_manifest.json`: NeMo's JSON-lines manifest (`audio_filepath`, `offset`, `duration`,
`context`, `answer`, plus `text`, `task`, `lang`, `id`), as its speech-LLM datasets read it.
`OUT/input_cfg.yaml`: the train cuts as a NeMo Lhotse `input_cfg` entry. `OUT/audio/`: the FLAC files.
Splits: a mix's `train`/`dev`/`test`, else `train`. Paths are absolute, or relative to OUT with
`relative` (NeMo resolves manifest paths against the manifest's folder).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from lhotse import MonoCut, Recording, SupervisionSegment
from lhotse.audio import AudioSource

from osum_data.export.engine import RUN_DIR, concat_text, link, part_dirs, relative_or_absolute
from osum_data.export.osum_reader import SAMPLING_RATE
from osum_data.export.samples import FormatStage, Sample
from osum_data.manifest_io import atomic_path, dumps
from osum_data.run.stage import register_stage

STAGE = "export_nemo"


@register_stage(STAGE, version=2)  # 2: files in per-call parts
class ExportNemo(FormatStage):
    """Per shard and split: FLAC files, a manifest.json piece and a cuts.jsonl piece."""

    stage_name = STAGE

    def __init__(self, out_dir: str, relative: bool = False):
        self.out = Path(out_dir)
        self.relative = relative

    def write_split(self, samples: list[Sample], folder: Path) -> None:
        manifest, cuts = [], []
        for s in samples:
            with atomic_path(folder / "audio" / f"{s.name}.flac") as tmp:
                tmp.write_bytes(s.flac)
            final = self.out / "audio" / f"{s.name}.flac"
            path = relative_or_absolute(final, self.out, self.relative)
            manifest.append(
                {
                    "audio_filepath": path,
                    "offset": 0.0,
                    "duration": s.duration,
                    "context": s.instruction,
                    "answer": s.target,
                    "text": s.target,
                    "task": s.task,
                    "lang": s.language,
                    "id": s.id,
                }
            )
            cuts.append(_cut(s, path))
        with atomic_path(folder / "manifest.json") as tmp:
            tmp.write_text("".join(dumps(m) + "\n" for m in manifest), encoding="utf-8")
        with atomic_path(folder / "cuts.jsonl") as tmp:
            tmp.write_text("".join(dumps(c) + "\n" for c in cuts), encoding="utf-8")


def _cut(s: Sample, path: str) -> dict:
    n = round(s.duration * SAMPLING_RATE)
    rec = Recording(
        id=s.id,
        sources=[AudioSource(type="file", channels=[0], source=path)],
        sampling_rate=SAMPLING_RATE,
        num_samples=n,
        duration=s.duration,
    )
    sup = SupervisionSegment(
        id=s.id,
        recording_id=s.id,
        start=0.0,
        duration=s.duration,
        channel=0,
        text=s.target,
        language=s.language or None,
        speaker=s.speaker or None,
        gender=s.gender or None,
        custom={"transcript": s.transcript, **s.labels},
    )
    cut = MonoCut(
        id=s.id,
        start=0.0,
        duration=s.duration,
        channel=0,
        recording=rec,
        supervisions=[sup],
        custom={"context": s.instruction, "task": s.task, "transcript": s.transcript},
    )
    return cut.to_dict()


def gather_nemo(out: Path, shards: int, relative: bool) -> dict[str, int]:
    """Link the FLAC files; join each split's manifest and cuts; write input_cfg.yaml. Returns
    samples per split."""
    run_dir = out / RUN_DIR
    shutil.rmtree(out / "audio", ignore_errors=True)  # nothing of an earlier export into OUT stays
    for old in [*out.glob("*_manifest.json"), *out.glob("*_cuts.jsonl"), out / "input_cfg.yaml"]:
        old.unlink(missing_ok=True)
    manifests: dict[str, list[Path]] = {}
    cuts: dict[str, list[Path]] = {}
    for _, d in part_dirs(run_dir, STAGE, shards):
        for split_dir in sorted(p for p in d.iterdir() if p.is_dir()):
            for f in sorted((split_dir / "audio").glob("*.flac")):
                link(f, out / "audio" / f.name)
            manifests.setdefault(split_dir.name, []).append(split_dir / "manifest.json")
            cuts.setdefault(split_dir.name, []).append(split_dir / "cuts.jsonl")
    counts = {}
    for split in sorted(manifests):
        counts[split] = concat_text(manifests[split], out / f"{split}_manifest.json")
        concat_text(cuts[split], out / f"{split}_cuts.jsonl")
    if "train" in counts:
        cfg = [
            {
                "type": "lhotse",
                "cuts_path": relative_or_absolute(out / "train_cuts.jsonl", out, relative),
                "weight": 1.0,
            }
        ]
        with atomic_path(out / "input_cfg.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return counts
