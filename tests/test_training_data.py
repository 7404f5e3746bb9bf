"""Trainer data path: manifests and Shar, bucketing, token caps, task mixing, positions, redraws."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from collections import Counter  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from lhotse import CutSet  # noqa: E402

from osum_data.demo.task_cuts import demo_task_cuts, write_demo_manifest  # noqa: E402
from tests.conftest import REPO, speech  # noqa: E402
from training.config import DataConfig, SpecAugmentConfig, load_config  # noqa: E402
from training.data import (  # noqa: E402
    PositionedSampler,
    SpeechLLMDataset,
    estimate_tokens,
    make_loader,
    make_sampler,
    mix,
    open_cuts,
)
from training.features import log_mel, spec_augment  # noqa: E402
from training.sequence import PromptFormat  # noqa: E402
from training.stream import Position  # noqa: E402
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
        make_sampler(
            cuts, cfg.model_copy(update={"bucketing": False}), seed=0, world_size=1, rank=0, shuffle=True
        )
    )
    assert bucketed < 0.2 < random and bucketed < random / 2, (bucketed, random)


def test_token_cap_limits_padded_tokens(demo120):
    cfg = DataConfig(max_duration=1000.0, max_tokens=400, num_buckets=2, buffer_size=1000)
    sizes = []
    for batch in make_sampler(open_cuts(demo120), cfg, seed=0, world_size=1, rank=0, shuffle=False):
        cuts = list(batch)
        assert len(cuts) * max(estimate_tokens(c) for c in cuts) <= 400  # hard: padded tokens
        sizes.append(len(cuts))
    uncapped = list(
        make_sampler(open_cuts(demo120), cfg.model_copy(update={"max_tokens": None}), 0, 1, 0, shuffle=False)
    )
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


def test_qa_and_reasoning_samples_keep_their_own_instruction_under_pool_redraw(fmt):
    """QA keys have no prompt pool (the question is the instruction) and reasoning samples carry a
    suffix: a pool redraw must keep them as stored instead of failing or dropping the suffix."""
    cuts = demo_task_cuts(2, tasks=("asr",))
    cuts[0].custom.update(task="<QA_CLOSED>", target="female", instruction="Is the speaker male or female?")
    cuts[1].custom.update(reasoning=True, instruction=cuts[1].custom["instruction"] + " Reason first.")
    ds = SpeechLLMDataset(fmt, DataConfig(instruction="pool"), seed=0)
    batch = ds[(Position(0, 1, 1), cuts)]
    for cut, row, m in zip(cuts, batch["input_ids"], prefix_masks(batch), strict=True):
        assert fmt.decode(row[m].tolist()) == cut.custom["instruction"]


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
    sampler = make_sampler(demo_task_cuts(12), cfg.__class__(num_buckets=4), 0, 1, 0, False)
    assert type(sampler.sampler).__name__ == "DynamicBucketingSampler"


def test_stream_restarts_at_a_saved_position_by_skipping_at_the_source(tmp_path):
    """Resume without replaying the sampler: from a snapshot, the stream yields exactly what it
    yielded after that point, for a manifest, a Shar set and a mix of both; and resumed reading
    decodes nothing before the position (manifest lines are skipped undecoded)."""
    from training.stream import CutStream, Source

    asr = write_demo_manifest(tmp_path / "asr.jsonl.gz", 12, tasks=("asr",))
    (tmp_path / "shar").mkdir()
    demo_task_cuts(10, tasks=("sgc",), offset=12).to_shar(
        tmp_path / "shar", fields={"recording": "flac"}, shard_size=3
    )

    def stream(specs):
        return CutStream(
            [Source(s, seed=5) for s in specs], [0.6, 0.4][: len(specs)] if len(specs) > 1 else None, seed=5
        )

    for specs, n in (([asr], 12), ([tmp_path / "shar"], 10), ([asr, tmp_path / "shar"], 40)):
        s = stream(specs)
        seen, states = [], []
        for cut in s:
            seen.append(cut.id)
            states.append(s.snapshot())
            if len(seen) == n:
                break
        for k in (1, 4, 7):
            again = stream(specs)
            again.begin(states[k - 1])
            assert [c.id for c, _ in zip(again, range(n - k), strict=False)] == seen[k:], (specs, k)
    # A mix crosses epochs of both sources and keeps their proportions (deterministic draws).
    mixed = seen
    assert len(mixed) == 40 and mixed.count(mixed[0]) >= 2
    assert (
        0.45
        < sum(i.startswith("asterisk") and i in {c.id for c in open_cuts(asr)} for i in mixed) / 40
        < 0.75
    )


def test_shar_shards_are_shuffled_per_epoch_and_counted_for_skipping(tmp_path):
    from training.stream import Source

    (tmp_path / "shar").mkdir()
    demo_task_cuts(12).to_shar(tmp_path / "shar", fields={"recording": "flac"}, shard_size=2)
    src = Source(tmp_path / "shar", seed=1)
    assert sorted(src.shard_order(0)) == list(range(6)) and src.shard_order(0) != src.shard_order(1)
    epoch0 = [c.id for c in src.cuts(0)]
    assert sorted(epoch0) == sorted(c.id for c in demo_task_cuts(12))
    assert [c.id for c in src.cuts(0, offset=5)] == epoch0[5:]


def test_temperature_mixing_follows_the_hours_of_each_input(tmp_path):
    from training.stream import CutStream, Source, mix_probabilities

    big = write_demo_manifest(tmp_path / "big.jsonl.gz", 30, tasks=("asr",))
    small = write_demo_manifest(tmp_path / "small.jsonl.gz", 5, tasks=("sgc",), offset=30)
    sources = [Source(big), Source(small)]
    h = [s.hours for s in sources]
    assert h[0] > 3 * h[1] > 0
    assert mix_probabilities(sources, None, 1.0) == pytest.approx([h[0] / sum(h), h[1] / sum(h)])
    flat = mix_probabilities(sources, None, 1e9)
    assert flat == pytest.approx([0.5, 0.5], abs=1e-6)
    t3 = mix_probabilities(sources, None, 3.0)
    assert h[1] / sum(h) < t3[1] < 0.5  # a higher temperature gives the small task more
    # Weights act as repetition factors under a temperature (OSUM's data list weights).
    assert mix_probabilities(sources, [1.0, h[0] / h[1]], 1.0) == pytest.approx([0.5, 0.5])
    draws = CutStream(sources, t3, seed=0)
    tasks = Counter(c.custom["task"] for c, _ in zip(draws, range(2000), strict=False))
    assert abs(tasks["<TRANSCRIBE> <GENDER>"] / 2000 - t3[1]) < 0.04


@pytest.fixture
def http_root(tmp_path):
    """A real HTTP server on loopback serving tmp_path (directory listings included)."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_shar_is_read_from_a_url(http_root, fmt):
    """Lhotse Shar over HTTP (smart_open; the directory listed with fsspec), as from object
    storage: a directory URL and a fields file (Lhotse's own {field: [shard URLs]})."""
    import yaml

    root, url = http_root
    cuts = demo_task_cuts(5)
    (root / "shar").mkdir()
    cuts.to_shar(root / "shar", fields={"recording": "flac"}, shard_size=2)
    cfg = DataConfig(max_duration=100.0, num_workers=0, bucketing=False)
    fields = {f: [f"{url}/shar/{f}.{i:06d}.{ext}" for i in range(3)] for f, ext in
              (("cuts", "jsonl.gz"), ("recording", "tar"))}  # fmt: skip
    (root / "fields.yaml").write_text(yaml.safe_dump(fields))
    for spec in (f"{url}/shar/", str(root / "fields.yaml"), f"{url}/fields.yaml"):
        batches = list(make_loader(open_cuts(spec), fmt, cfg, seed=0, train=False, epochs=1))
        assert sorted(i for b in batches for i in b["ids"]) == sorted(c.id for c in cuts), spec
        assert all(b["mel"].abs().sum() > 0 for b in batches)
    # The training stream reads it too (shards shuffled per epoch, positions resumable).
    from training.stream import Source

    assert sorted(c.id for c in Source(f"{url}/shar/", seed=0).cuts(0)) == sorted(c.id for c in cuts)
    with pytest.raises(FileNotFoundError, match="neither cuts.jsonl.gz nor Lhotse Shar"):
        open_cuts(f"{url}/")


def test_a_mixed_input_with_nothing_to_train_on_is_named(tmp_path):
    asr = write_demo_manifest(tmp_path / "asr.jsonl.gz", 4, tasks=("asr",))
    sgc = write_demo_manifest(tmp_path / "sgc.jsonl.gz", 4, tasks=("sgc",), offset=4)
    mixed = mix([str(asr), str(sgc)], None, seed=0, max_cut_duration=0.1)  # every cut is longer
    with pytest.raises(ValueError, match=r"(asr|sgc)\.jsonl\.gz has no cut to train on"):
        next(iter(mixed))
