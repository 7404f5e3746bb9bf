"""Task manifests for mixing, export and report tests, made from a real ASR pipeline run.

The ASR pipeline runs once on real recorded prompts (Debian's Asterisk sounds); every other task's
samples are those cuts with the label fields DESIGN section 3 defines set here (emotion, gender, age,
events, style, chat answer, word alignment, `label_source`, `custom.augment.snr`), re-templated with
the real `template` stage. The task pipelines of the other engineers would produce such cuts; only
the label values are invented here (the test says so), the audio and the templating are real.
"""

from __future__ import annotations

import json
from pathlib import Path

from lhotse import CutSet
from lhotse.supervision import AlignmentItem

from osum_data.manifest_io import read_jsonl, write_jsonl
from osum_data.template.builder import template

EMOTIONS = ["neutral", "happy", "sad", "angry"]
EVENTS = [["laugh"], ["cough"], ["sigh"], ["laugh", "cough"]]
STYLES = ["news_science", "daily_speech", "customer_service"]
AGES = [("child", 9), ("adult", 35), ("old", 71)]


def run_asr(out: Path, limit: int = 60) -> Path:
    """The real ASR pipeline over the first `limit` demo prompts; returns its cuts manifest. Test
    modules share one folder per session (`shared_asr`): a second call resumes the finished run."""
    from osum_data.demo import asterisk_input
    from osum_data.run.config import load_pipeline
    from osum_data.run.runner import run_pipeline

    manifest = asterisk_input(out, limit=limit)
    config = load_pipeline("pipelines/asr.yaml", ["audio_policy.min_sampling_rate=8000", "shard_size=50"])
    run_pipeline(config, manifest, out / "asr", workers=2, progress=False)
    return out / "asr" / "cuts.jsonl.gz"


def shared_asr(tmp_path_factory) -> Path:
    return run_asr(tmp_path_factory.getbasetemp() / "shared-asr-run")


def _labelled(cut, task: str, i: int, speakers: int):
    sup = cut.supervisions[0]
    sup.speaker = f"spk{i % speakers:03d}"
    custom = dict(sup.custom or {})
    source = {}
    if task in ("ser",):
        custom["emotion"] = EMOTIONS[i % len(EMOTIONS)]
        source["emotion"] = "corpus" if i % 3 else "model:emotion2vec"
    if task in ("sgc", "sap"):
        sup.gender = "male" if i % 2 else "female"
        source["gender"] = "corpus"
    if task == "sap":
        bucket, years = AGES[i % len(AGES)]
        custom["age"], custom["age_years"] = bucket, years
        source["age"] = "corpus"
    if task == "ved":
        custom["events"] = EVENTS[i % len(EVENTS)]
        source["events"] = "corpus"
    if task == "ssr":
        custom["style"] = STYLES[i % len(STYLES)]
        source["style"] = "llm:SmolLM2-135M-Instruct"
    if task == "sttc":
        custom["answer"] = "Thank you, I will do that right away."
        source["answer"] = "llm:SmolLM2-135M-Instruct"
    if task == "srwt":
        words = sup.text.split()
        step = cut.duration / max(1, len(words))
        sup.alignment = {
            "word": [AlignmentItem(w, round(k * step, 2), round(step * 0.9, 2)) for k, w in enumerate(words)]
        }
        source["alignment"] = "model:mms-300m"
    custom["label_source"] = source
    sup.custom = custom
    return cut


def task_manifest(
    asr_cuts: Path, task: str, out: Path, n: int | None = None, speakers: int = 12, augmented_every: int = 0
) -> Path:
    """`n` samples of `task` cycled from the ASR run's cuts, `speakers` synthetic speaker ids, labels
    set, templated by the real template stage. Each sample stands for a distinct recording: its own
    recording id and its own file (a symlink to the shared real audio, `<out>.audio/`), so lineage
    (osum_data.mix.lineage) sees distinct sources, as a corpus of that size would have. With
    `augmented_every`, every k-th cut carries `custom.augment` with an SNR (as augmentation writes)."""
    base = list(CutSet.from_file(asr_cuts))
    n = n or len(base)
    audio_dir = out.parent / f"{out.name}.audio"
    audio_dir.mkdir(parents=True, exist_ok=True)

    def items():
        for i in range(n):
            cut = CutSet.from_dicts([base[i % len(base)].to_dict()])[0]
            cut.id = f"{task}-{i:06d}-{cut.id}"
            cut.custom = {
                k: v for k, v in (cut.custom or {}).items() if k not in ("task", "target", "instruction")
            }
            cut = template(
                _labelled(cut, task, i, speakers), task=task, x_only_ratio=0.2 if task != "asr" else 0
            )
            if augmented_every and i % augmented_every == 0:
                cut.custom["augment"] = {
                    "source_cut_id": f"{cut.id}-source",
                    "snr": 5.0 + (i % 20),
                    "seed": i,
                }
            d = cut.to_dict()
            rec = d["recording"]
            real = Path(rec["sources"][0]["source"])
            link = audio_dir / f"{cut.id}{real.suffix}"
            if not link.is_symlink():
                link.symlink_to(real)
            rec["id"], rec["sources"][0]["source"] = cut.id, str(link)
            for sup in d["supervisions"]:
                sup["recording_id"] = cut.id
            yield d

    write_jsonl(out, items())
    return out


def count_tasks(paths: list[Path]) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in paths:
        for d in read_jsonl(p):
            t = d["custom"]["mix"]["task"]
            out[t] = out.get(t, 0) + 1
    return out


def dump(obj) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False)
