"""Trainer data path: manifests and Shar, bucketing, token caps, task mixing, positions, redraws."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from collections import Counter  # noqa: E402
from dataclasses import replace  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from lhotse import CutSet  # noqa: E402

from tests.conftest import REPO, speech  # noqa: E402
from training.config import DataConfig, SpecAugmentConfig, load_config  # noqa: E402
from training.data import (  # noqa: E402
    Position,
    PositionedSampler,
    SpeechLLMDataset,
    estimate_tokens,
    make_loader,
    make_sampler,
    mix,
    open_cuts,
)
from training.demo import demo_task_cuts, write_demo_manifest  # noqa: E402
from training.features import log_mel, spec_augment  # noqa: E402
from training.sequence import PromptFormat  # noqa: E402
from training.weights import load_tokenizer  # noqa: E402

TINY = REPO / "training" / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def fmt():
    return PromptFormat(load_tokenizer(load_config(TINY).model.llm.tokenizer))


@pytest.fixture(scope="module")
def demo120(tmp_path_factory):
    return write_demo_manifest(tmp_path_factory.mktemp("d") / "cuts.jsonl.gz", 120, max_duration=12.0)


def padding_ratio(sampler) -> float:
    real = padded = 0.0
    for batch in sampler:
        durs = [c.duration for c in batch]
        real += sum(durs)
        padded += len(durs) * max(durs)
    return 1 - real / padded


def test_bucketing_pads_less_than_random_batches(demo120):
    cfg = DataConfig(max_duration=30.0, num_buckets=6, buffer_size=1000)
    cuts = open_cuts(demo120)
    bucketed = padding_ratio(make_sampler(cuts, cfg, seed=0, world_size=1, rank=0, shuffle=True))
    random = padding_ratio(
        make_sampler(cuts, replace(cfg, bucketing=False), seed=0, world_size=1, rank=0, shuffle=True)
    )
    assert bucketed < 0.2 < random and bucketed < random / 2, (bucketed, random)


def test_token_cap_limits_padded_tokens(demo120):
    cfg = DataConfig(max_duration=1000.0, max_tokens=400, num_buckets=2, buffer_size=1000)
    sizes = []
    for batch in make_sampler(open_cuts(demo120), cfg, seed=0, world_size=1, rank=0, shuffle=False):
        cuts = list(batch)
        # Lhotse closes a batch when one more cut as long as the longest would exceed the cap, so
        # the batch without its last cut is always within it.
        if len(cuts) > 1:
            assert (len(cuts) - 1) * max(estimate_tokens(c) for c in cuts[:-1]) <= 400
        sizes.append(len(cuts))
    uncapped = list(make_sampler(open_cuts(demo120), replace(cfg, max_tokens=None), 0, 1, 0, shuffle=False))
    assert sum(sizes) == 120 and len(sizes) > 3 * len(uncapped)


def test_weighted_mixing_keeps_proportions_beyond_the_small_set(tmp_path):
    asr = write_demo_manifest(tmp_path / "asr.jsonl.gz", 30, tasks=("asr",))
    sgc = write_demo_manifest(tmp_path / "sgc.jsonl.gz", 5, tasks=("sgc",), offset=30)
    mixed = mix([str(asr), str(sgc)], [3.0, 1.0], seed=0, max_cut_duration=30.0)
    counts = Counter(c.custom["task"] for c, _ in zip(mixed, range(400), strict=False))
    # 400 draws from an endless 3:1 mixture: the 5-cut set keeps its quarter well past its size.
    assert sum(counts.values()) == 400
    assert 0.18 < counts["<TRANSCRIBE> <GENDER>"] / 400 < 0.32, counts


def test_shar_directories_are_read_directly(tmp_path, fmt):
    cuts = demo_task_cuts(6)
    (tmp_path / "shar").mkdir()
    cuts.to_shar(tmp_path / "shar", fields={"recording": "flac"}, shard_size=4)
    read = open_cuts(tmp_path / "shar")
    cfg = DataConfig(max_duration=100.0, num_workers=0, bucketing=False)
    batches = list(make_loader(read, fmt, cfg, seed=0, train=False, epochs=1))
    assert sorted(i for b in batches for i in b["ids"]) == sorted(c.id for c in cuts)
    assert batches[0]["mel"].shape[1] == 80 and batches[0]["targets"][0]


def test_positions_resume_the_same_stream(demo120, fmt):
    cfg = DataConfig(max_duration=60.0, num_buckets=3, buffer_size=500)

    def stream(start=None, n=30):
        sampler = make_sampler(open_cuts(demo120), cfg, seed=3, world_size=1, rank=0, shuffle=True)
        out = []
        for pos, cuts in PositionedSampler(sampler, start):
            out.append((pos, [c.id for c in cuts]))
            if len(out) == n:
                return out

    full = stream()
    epochs = {p.epoch for p, _ in full}
    assert len(epochs) >= 2  # the stream crosses epoch boundaries
    for k in (5, 17):
        assert stream(full[k - 1][0], n=30 - k) == full[k:]
    # A new epoch reshuffles.
    first = [ids for p, ids in full if p.epoch == 0]
    second = [ids for p, ids in full if p.epoch == 1]
    assert first[: len(second)] != second


def test_instruction_redraw_is_from_the_pool_and_reproducible(fmt):
    from osum_data.tasks import prompt_pool

    cuts = demo_task_cuts(8, tasks=("asr", "sgc"))
    ds = SpeechLLMDataset(fmt, DataConfig(instruction="pool"), seed=0)
    drawn = {}
    for index in range(1, 6):
        batch = ds[(Position(0, index, index), cuts)]
        prefixes = [
            fmt.decode(row[m].tolist())
            for row, m in zip(batch["input_ids"], prefix_masks(batch), strict=True)
        ]
        drawn[index] = prefixes
        for cut, text in zip(cuts, prefixes, strict=True):
            assert text in prompt_pool("en")[cut.custom["task"]]
    assert len({tuple(v) for v in drawn.values()}) > 1  # redrawn per batch
    again = ds[(Position(0, 3, 3), cuts)]
    assert torch.equal(again["input_ids"], ds[(Position(0, 3, 3), cuts)]["input_ids"])
    stored = SpeechLLMDataset(fmt, DataConfig(instruction="stored"), seed=0)[(Position(0, 1, 1), cuts)]
    first = fmt.decode(stored["input_ids"][0][prefix_masks(stored)[0]].tolist())
    assert first == cuts[0].custom["instruction"]


def prefix_masks(batch) -> list[torch.Tensor]:
    """Positions before the first speech placeholder of each row."""
    out = []
    for m in batch["speech_mask"]:
        first = int(m.nonzero()[0])
        mask = torch.zeros_like(m)
        mask[:first] = True
        out.append(mask)
    return out


def test_spec_augment_is_seeded_and_masks():
    audio, _ = speech("activated")
    mel = log_mel(audio)
    cfg = SpecAugmentConfig(freq_masks=2, freq_width=10, time_masks=2, time_width=0.1)
    a = spec_augment(mel, cfg, torch.Generator().manual_seed(1))
    b = spec_augment(mel, cfg, torch.Generator().manual_seed(1))
    c = spec_augment(mel, cfg, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, mel)


def test_cuts_that_are_not_task_samples_are_refused(fmt):
    cut = demo_task_cuts(1)[0]
    cut.custom = {}
    with pytest.raises(ValueError, match="custom.task"):
        SpeechLLMDataset(fmt, DataConfig(), seed=0)[(Position(0, 1, 1), CutSet.from_cuts([cut]))]


def long_task_cut(tmp_path, seconds: float = 31.0):
    """A templated ASR cut of real speech longer than Whisper's 30 s window."""
    import numpy as np
    import soundfile as sf
    from lhotse import Recording, SupervisionSegment

    from osum_data.template.builder import template

    audio, text = speech("activated")
    path = tmp_path / "long.wav"
    sf.write(path, np.resize(audio, int(seconds * 16000)), 16000)
    cut = Recording.from_file(path, recording_id="long").to_cut()
    cut.id = "long_31s"
    sup = SupervisionSegment(id=cut.id, recording_id="long", start=0, duration=cut.duration, text=text,
                             language="en", speaker="allison", gender="female")  # fmt: skip
    cut.supervisions = [sup]
    return template(cut, task="asr")


def test_dev_cuts_over_30_s_are_skipped_and_listed(tmp_path, fmt):
    """Bug 3 of issue 10: only the training set was length-filtered; a 31 s dev cut crashed the
    encoder at the first evaluation."""
    cuts = CutSet.from_cuts(list(demo_task_cuts(3)) + [long_task_cut(tmp_path)])
    cfg = DataConfig(max_duration=100.0, num_workers=0, num_buckets=2)
    loader = make_loader(cuts, fmt, cfg, seed=0, train=False, epochs=1)
    seen = [i for b in loader for i in b["ids"]]
    assert sorted(seen) == sorted(c.id for c in cuts if c.id != "long_31s")
    assert all(b["mel"].shape[-1] <= 3000 for b in loader)
    assert loader.cut_filter.counts == {"too_long": 1}
    assert "longer than 30 s" in loader.cut_filter.ids["long_31s"]


def test_dev_sets_smaller_than_the_bucket_count_are_batched_plainly(fmt):
    """Bug 4 of issue 10: Lhotse's bucketing asserts num_buckets <= number of cuts."""
    cuts = demo_task_cuts(3)
    cfg = DataConfig(max_duration=100.0, num_workers=0, num_buckets=10, bucketing=True)
    batches = list(make_loader(cuts, fmt, cfg, seed=0, train=False, epochs=1))
    assert sorted(i for b in batches for i in b["ids"]) == sorted(c.id for c in cuts)
    # a large enough set still gets duration buckets
    assert type(make_sampler(demo_task_cuts(12), cfg.__class__(num_buckets=4), 0, 1, 0, False)).__name__ == (
        "DynamicBucketingSampler"
    )
