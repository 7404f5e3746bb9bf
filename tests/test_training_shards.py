"""Issue 18, defects 2 and 5: each rank reads only its part of the training input, at the source
(Shar: whole shards; manifests: lines), so each audio byte is read once per epoch in the whole
job; resumes stay exact; an exact resume over Shar reads no audio while it replays; multi-rank
evaluation does not score Lhotse's padding copies; skipped cuts are counted once.

Ranks are simulated in one process (rank/world arguments, as torchrun would set them): the split
is a pure function of (seed, epoch, rank, world). Audio reads are counted by wrapping Lhotse's
TarIterator (the real reader still does the reading)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from collections import Counter  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from lhotse import CutSet  # noqa: E402

from osum_data.demo.task_cuts import demo_task_cuts, write_demo_manifest  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from training.config import DataConfig, load_config  # noqa: E402
from training.data import make_loader, training_stream  # noqa: E402
from training.sequence import PromptFormat  # noqa: E402
from training.stream import CutStream, Source  # noqa: E402
from training.weights import load_tokenizer  # noqa: E402

TINY = REPO / "training" / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def fmt():
    return PromptFormat(load_tokenizer(load_config(TINY).model.llm.tokenizer))


@pytest.fixture(scope="module")
def shar(tmp_path_factory):
    root = tmp_path_factory.mktemp("shar")
    cuts = demo_task_cuts(30, tasks=("asr", "sgc"), max_duration=3.0)
    cuts.to_shar(root, fields={"recording": "flac"}, shard_size=2)
    return root, sorted(c.id for c in cuts)


@pytest.fixture
def audio_reads(monkeypatch):
    """Recording tar entries read (path -> count), through the real TarIterator."""
    import lhotse.shar.readers.lazy as lazy

    reads: Counter[str] = Counter()
    real = lazy.TarIterator

    class Counting(real):
        def __iter__(self):
            for item in super().__iter__():
                reads[str(self.source)] += 1
                yield item

    monkeypatch.setattr(lazy, "TarIterator", Counting)
    return reads


def test_ranks_read_disjoint_shards_that_cover_the_epoch(shar, audio_reads):
    root, ids = shar
    for epoch in (0, 1):
        parts, tars = [], []
        for rank in (0, 1):
            audio_reads.clear()
            parts.append([c.id for c in Source(root, seed=3, rank=rank, world=2).cuts(epoch)])
            tars.append(set(audio_reads))
        assert not set(parts[0]) & set(parts[1]) and sorted(parts[0] + parts[1]) == ids
        assert tars[0] and tars[1] and not tars[0] & tars[1]  # no recording shard read by both
        assert abs(len(parts[0]) - len(parts[1])) <= 2
    with pytest.raises(ValueError, match="15 Shar shard.* for 16 ranks"):
        Source(root, rank=0, world=16)


def test_ranks_read_disjoint_lines_of_a_manifest(tmp_path):
    manifest = write_demo_manifest(tmp_path / "cuts.jsonl.gz", 11)
    parts = [[c.id for c in Source(manifest, rank=r, world=3).cuts(0)] for r in range(3)]
    flat = [i for p in parts for i in p]
    assert len(flat) == len(set(flat)) == 11 and [len(p) for p in parts] == [4, 4, 3]


def test_training_loaders_of_two_ranks_split_the_stream_and_resume_exactly(shar, fmt):
    root, ids = shar
    cfg = DataConfig(max_duration=8.0, num_buckets=2, buffer_size=6, num_workers=0)

    def loader(rank, start=None):
        stream = training_stream([str(root)], None, seed=1, rank=rank, world=2)
        return make_loader(stream, fmt, cfg, seed=0, world_size=2, rank=rank, train=True, start=start)

    runs = {}
    for rank in (0, 1):
        out = []
        for batch in loader(rank):
            out.append((batch["position"], batch["ids"]))
            if batch["position"].epoch == 1:
                break
        runs[rank] = out
    epoch0 = {r: [i for p, b in runs[r] if p.epoch == 0 for i in b] for r in (0, 1)}
    assert not set(epoch0[0]) & set(epoch0[1]) and sorted(epoch0[0] + epoch0[1]) == ids
    # Exact resume on each rank: the same batches after a position, with their audio.
    for rank in (0, 1):
        k = len(runs[rank]) // 2
        again = [b["ids"] for b, _ in zip(loader(rank, runs[rank][k - 1][0]), range(3), strict=False)]
        assert again == [b for _, b in runs[rank][k : k + 3]]


def test_exact_resume_over_shar_reads_no_audio_while_replaying(shar, fmt, audio_reads):
    root, ids = shar
    cfg = DataConfig(max_duration=8.0, num_buckets=2, buffer_size=4, num_workers=0)

    def loader(start=None):
        stream = training_stream([str(root)], None, seed=1)
        return make_loader(stream, fmt, cfg, seed=0, train=True, start=start)

    full = []
    for batch in loader():
        full.append(batch)
        if len(full) == 12:
            break
    k = 9
    start = full[k - 1]["position"]
    replayed = start.stream.sources[0][1]  # cuts the replay goes through
    audio_reads.clear()
    again = [b for b, _ in zip(loader(start), range(3), strict=False)]
    assert [b["ids"] for b in again] == [b["ids"] for b in full[k : k + 3]]
    for a, b in zip(again, full[k : k + 3], strict=True):
        assert torch.equal(a["mel"], b["mel"])  # the buffered cuts got their own audio back
    # The resumed run read the audio of the cuts it batches (and their shard-mates), not the
    # epoch up to the checkpoint again.
    batched = sum(len(b["ids"]) for b in again)
    assert replayed >= 18 and sum(audio_reads.values()) <= batched + cfg.buffer_size + 4 < replayed


def test_fast_resume_on_fewer_ranks_starts_past_every_old_rank(shar, tmp_path):
    root, ids = shar
    manifest = write_demo_manifest(tmp_path / "cuts.jsonl.gz", 20)
    for spec, total in ((root, 30), (manifest, 20)):
        old, states = [], []
        for rank, n in ((0, 5), (1, 8)):  # rank 1 ran ahead
            s = CutStream([Source(spec, seed=2, rank=rank, world=2)], seed=2)
            for _, cut in zip(range(n), s, strict=False):  # (range first: s is not read ahead)
                old.append(cut.id)
            states.append(s.snapshot())
        new = CutStream([Source(spec, seed=2)], seed=2)
        new.begin(states[0], peers=tuple(states))
        rest = [c.id for c in new]
        assert rest and not set(rest) & set(old), spec  # nothing read twice
        lost = total - len(old) - len(rest)
        assert 0 <= lost <= 4, (spec, lost)  # at most what lay between the slow and the fast rank


def test_multi_rank_evaluation_scores_each_dev_cut_once(fmt):
    """Lhotse pads the last round of a 2-rank pass with a copy (`<id>_dup0`); dev loss counts and
    decoded rows leave it out."""
    from training.evaluate import decode_rows
    from training.model import build_model
    from training.stats import Stats

    cuts = demo_task_cuts(5, tasks=("asr",), max_duration=3.0)
    cfg = DataConfig(max_duration=100.0, max_cuts=1, num_workers=0, bucketing=False)
    tiny = load_config(TINY, ["decode.max_new_tokens=2"])
    model, _ = build_model(tiny)
    stats, rows, seen = Stats(["<TRANSCRIBE>"]), [], []
    for rank in (0, 1):
        loader = make_loader(cuts, fmt, cfg, seed=0, world_size=2, rank=rank, train=False, epochs=1)
        for batch in loader:
            seen += batch["ids"]
            n = len(batch["ids"])
            stats.add(batch, {"sample_loss_sum": torch.ones(n), "sample_tokens": torch.ones(n)})
        dec = make_loader(cuts, fmt, cfg, seed=0, world_size=2, rank=rank, train=False, with_targets=False,
                          epochs=1)  # fmt: skip
        rows += decode_rows(model, dec, fmt, tiny, torch.device("cpu"), synced=False)
    assert any(i.endswith("_dup0") for i in seen)  # the padding copy is there (ranks step together)
    r = stats.reduce()
    assert r["cuts"] == 5 and r["target_tokens"] == 5
    assert sorted(x["id"] for x in rows) == sorted(c.id for c in cuts)


def test_skipped_training_cuts_are_counted_once(tmp_path, fmt):
    """The trainer's log said 402 skipped cuts for 200: the bucketing sampler's bin estimate, the
    probe for a bucket's worth and the real pass each counted them."""
    from training.distributed import Dist
    from training.stream import Position
    from training.train import build_loaders

    manifest = write_demo_manifest(tmp_path / "cuts.jsonl.gz", 40, max_duration=4.0)
    long = sum(c.duration > 2.0 for c in CutSet.from_file(manifest))
    assert 5 < long < 35
    cfg = load_config(TINY, ["data.max_cut_duration=2.0", "data.num_workers=0", "data.num_buckets=2"])
    loader, _, _ = build_loaders(cfg, fmt, [str(manifest)], None, None, Dist(), Position(0, 0, 0))
    for batch in loader:
        if batch["position"].epoch == 2:
            break
    assert dict(loader.cut_filter.counts) == {"too_long": long}


def test_a_position_with_every_ranks_stream_state_round_trips_through_a_checkpoint_dict():
    """rank-R.pt holds the position as plain data (weights_only loading): the peers' stream states
    come back as StreamState, not dicts, so a fast resume on another world can compare them."""
    import dataclasses

    from training.checkpoint import position_from_dict
    from training.stream import Position, StreamState

    peers = (StreamState(4, ((0, 5),), 2), StreamState(1, ((1, 1),), 2))
    position = Position(1, 2, 3, StreamState(4, ((0, 5),), 2), peers)
    assert position_from_dict(dataclasses.asdict(position)) == position
