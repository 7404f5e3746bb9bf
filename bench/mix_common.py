"""Task-sample manifests for the mixing benchmarks: the real demo prompts, templated, cycled to N."""

from __future__ import annotations

import json
from pathlib import Path

from osum_data.demo import SOUNDS_DIR, asterisk_transcripts, prompt_cut
from osum_data.manifest_io import write_jsonl
from osum_data.template.builder import template

LABELS = {"sgc": lambda i: {"gender": "male" if i % 2 else "female"}}


def task_samples(
    path: Path, n: int, task: str = "asr", speakers: int = 500, distinct_recordings: bool = False
) -> Path:
    """n samples of `task` cycling over the templated prompts (distinct ids, shared 8 kHz audio,
    `speakers` speaker ids); only strings change per line, so millions are written quickly. With
    `distinct_recordings`, each sample names its own recording and file (fields-only mixes never open
    it), so the mix's lineage grouping sees a corpus of n recordings, as a real one would be."""
    texts = asterisk_transcripts()
    names = [k for k in sorted(texts) if (SOUNDS_DIR / f"{k}.wav").exists() and texts[k].strip()]
    base = []
    for i, name in enumerate(names):
        cut = prompt_cut(name, texts[name])
        if task == "sgc":
            cut.supervisions[0].gender = LABELS["sgc"](i)["gender"]
        try:
            base.append(json.dumps(template(cut, task=task).to_dict()))
        except Exception:  # a prompt whose text does not template (tags, empty): left out
            continue

    def items():
        for i in range(n):
            d = json.loads(base[i % len(base)])
            d["id"] = d["supervisions"][0]["id"] = f"{task}-{i:08d}"
            d["supervisions"][0]["speaker"] = f"spk{i % speakers:05d}"
            if distinct_recordings:
                d["recording"]["id"] = d["supervisions"][0]["recording_id"] = d["id"]
                d["recording"]["sources"][0]["source"] = f"/corpus/{task}/{d['id']}.wav"
            yield d

    write_jsonl(path, items())
    return path
