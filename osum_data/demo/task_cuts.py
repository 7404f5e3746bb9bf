"""Small task manifests from the demo corpus (Debian's recorded Asterisk prompts) for smoke runs,
tests and benchmarks: real speech, real transcripts, templated by the pipeline's own `template`
stage, resampled lazily to 16 kHz like `audio_policy` does. Takes a second, needs no Ray. It lives
with the demo's inputs, not in training/, which imports nothing of osum_data above its foundations.
"""

from __future__ import annotations

from pathlib import Path

from lhotse import CutSet


def demo_task_cuts(
    n: int | None,
    tasks: tuple[str, ...] = ("asr",),
    min_duration: float = 0.5,
    max_duration: float = 4.0,
    offset: int = 0,
) -> CutSet:
    """`n` (None: all) distinct prompts of the demo corpus with durations within bounds (in name
    order, from `offset`), each templated for the tasks in turn (sample i gets tasks[i % len(tasks)])."""
    from osum_data.demo import SOUNDS_DIR, asterisk_transcripts, prompt_cut
    from osum_data.template.builder import template

    texts = asterisk_transcripts()
    cuts = []
    skipped = 0
    for name in sorted(texts):
        wav = SOUNDS_DIR / f"{name}.wav"
        text = texts[name].replace("<", "").replace(">", "").strip()
        if "/" in name or not wav.exists() or not text:
            continue
        cut = prompt_cut(name, text, cut_id=f"asterisk_{name}")
        if not min_duration <= cut.duration <= max_duration:
            continue
        if skipped < offset:
            skipped += 1
            continue
        cuts.append(template(cut.resample(16000), task=tasks[len(cuts) % len(tasks)]))
        if len(cuts) == n:
            break
    if n is not None and len(cuts) < n:
        raise ValueError(
            f"the demo corpus has only {len(cuts)} prompts within {min_duration}-{max_duration} s"
        )
    return CutSet.from_cuts(cuts)


def write_demo_manifest(path: str | Path, n: int, **kwargs) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    demo_task_cuts(n, **kwargs).to_file(path)
    return path
