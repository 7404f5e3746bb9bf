"""Issue 18, defect 1: OSUM's batch caps are hard limits on the *padded* batch (batch size x the
longest cut's mel frames <= 3900, x the longest LLM sequence <= 1900). Lhotse's rule keeps the cut
that crosses the cap (the osum config's largest batch was 53.8 s of padded audio against 39 s).

The length distribution is realistic but synthetic: metadata-only cuts (no audio is read by a
sampler) with log-normal durations between 0.3 and 29 s and target lengths of prompts, chat
answers and timestamped transcripts."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import random  # noqa: E402

import pytest  # noqa: E402
from lhotse import CutSet, MonoCut, Recording  # noqa: E402
from lhotse.audio import AudioSource  # noqa: E402

from tests.conftest import REPO  # noqa: E402
from training.config import DataConfig, load_config  # noqa: E402
from training.data import (  # noqa: E402
    CutFilter,
    SequenceLength,
    SpeechLLMDataset,
    cut_frames,
    estimate_tokens,
    make_sampler,
)
from training.stream import Position  # noqa: E402

OSUM = REPO / "training" / "configs" / "osum_qwen2_7b.yaml"


def synthetic_cuts(n: int, seed: int = 0, scale: float = 1.0) -> CutSet:
    rng = random.Random(seed)
    cuts = []
    for i in range(n):
        dur = round(min(29.0, max(0.3, rng.lognormvariate(1.2, 0.7) * scale)), 3)
        target = "w" * rng.choice([20, 60, 150, 400, 900, 1500])  # ~7 to ~500 tokens
        rec = Recording(f"r{i}", [AudioSource("file", [0], "/dev/null")], 16000, int(dur * 16000), dur)
        custom = {"target": target, "task": "<TRANSCRIBE>"}
        cuts.append(MonoCut(f"c{i}", 0.0, dur, 0, recording=rec, custom=custom))
    return CutSet.from_cuts(cuts)


def osum_data(**kw) -> DataConfig:
    return load_config(OSUM).data.model_copy(update={"buffer_size": 1500, **kw})


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_no_batch_exceeds_the_padded_frame_and_token_caps(scale):
    cfg = osum_data()
    assert (cfg.max_duration, cfg.max_tokens) == (39.0, 1900)
    cuts = synthetic_cuts(1500, seed=1, scale=scale)
    sampler = make_sampler(cuts, cfg, seed=0, world_size=1, rank=0, shuffle=True)
    frames, tokens, seen = [], [], []
    for batch in sampler:
        b = list(batch)
        frames.append(len(b) * max(cut_frames(c) for c in b))
        tokens.append(len(b) * max(estimate_tokens(c) for c in b))
        seen += [c.id for c in b]
    assert max(frames) <= 3900 and max(tokens) <= 1900, (max(frames), max(tokens))
    # Nothing lost or doubled: every cut is batched once or skipped (alone over a cap) and counted.
    skipped = sampler.cut_filter.counts.get("over_batch_cap", 0)
    assert len(seen) == len(set(seen)) and len(seen) + skipped == 1500
    # Batches stay full (short cuts: a 20 s cut is a batch of its own whatever the rule).
    if scale == 1.0:
        assert sum(frames) / len(frames) > 0.75 * 3900 or sum(tokens) / len(tokens) > 0.75 * 1900


def test_a_cut_that_alone_exceeds_a_cap_is_skipped_and_counted():
    cuts = list(synthetic_cuts(40, seed=2))
    long = cuts[0].with_id("long")  # 12 s of audio: 1200 frames against a 10 s cap
    long.duration = long.recording.duration = 12.0
    long.recording.num_samples = 12 * 16000
    wordy = cuts[1].with_id("wordy")
    wordy.custom = {**wordy.custom, "target": "w" * 3000}  # ~1000 tokens against 600
    cfg = DataConfig(max_duration=10.0, max_tokens=600, num_buckets=2, buffer_size=100)
    keep = CutFilter(30.0, record_ids=True)
    sampler = make_sampler(CutSet.from_cuts([long, wordy, *cuts[2:]]), cfg, 0, 1, 0, True, cut_filter=keep)
    ids = [c.id for b in sampler for c in b]
    assert "long" not in ids and "wordy" not in ids and len(ids) == len(set(ids)) > 20
    assert set(keep.counts) == {"over_batch_cap"} and keep.counts["over_batch_cap"] == 40 - len(ids)
    assert set(keep.ids) == {"long", "wordy"} | ({c.id for c in cuts} - set(ids) - {cuts[0].id, cuts[1].id})
    assert "1200 mel frames exceed the padded batch cap of 1000" in keep.ids["long"]
    assert "exceed the padded batch cap of 600" in keep.ids["wordy"]


def test_the_token_cap_is_measured_on_the_sequence_the_dataset_builds():
    """SequenceLength (what the trainer's sampler measures) equals the real row length of a batch:
    instruction (chat header included), speech embeddings with the osum boundary tokens, target,
    eos; with a prompt pool it is the longest prompt's."""
    from osum_data.demo.task_cuts import demo_task_cuts
    from training.sequence import PromptFormat
    from training.weights import load_tokenizer

    tiny = load_config(REPO / "training/configs/tiny.yaml")
    fmt = PromptFormat(load_tokenizer(tiny.model.llm.tokenizer))
    cuts = demo_task_cuts(4, tasks=("asr", "sgc"))
    for cfg in (DataConfig(instruction="stored"), DataConfig(instruction="pool")):
        measure = SequenceLength(fmt, cfg, boundary_tokens=2)
        batch = SpeechLLMDataset(fmt, cfg, seed=0, boundary_tokens=2)[(Position(0, 1, 1), cuts)]
        real = batch["attention_mask"].sum(1).tolist()
        if cfg.instruction == "stored":
            assert [measure(c) for c in cuts] == real
        else:
            assert all(measure(c) >= r for c, r in zip(cuts, real, strict=True))
        assert all(int(batch["mel_lens"][i]) == cut_frames(c) for i, c in enumerate(cuts))
