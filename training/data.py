"""From pipeline manifests to padded batches: CutSets (jsonl.gz) or Lhotse Shar, weighted task
mixing, duration/token-bucketed batches, on-the-fly log-mel, instruction draw, token layout.

Exact resume: every batch carries its position (epoch, index within the epoch, global index). The
trainer checkpoints the position of the last batch it *consumed* (a DataLoader prefetches ahead, so
the sampler's own state is ahead of training), and a resumed run fast-forwards the sampler to it.
Every random choice of a batch (SpecAugment, instruction redraw) comes from a generator seeded by
(seed, global index), so a batch is the same bytes whichever worker builds it and whenever.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lhotse import CutSet
from lhotse.cut import Cut
from lhotse.dataset.sampling.base import TimeConstraint
from lhotse.dataset.sampling.dynamic import DynamicCutSampler
from lhotse.dataset.sampling.dynamic_bucketing import DynamicBucketingSampler

from osum_data.sources import source_problem
from training.config import DataConfig
from training.features import SAMPLING_RATE, log_mel, spec_augment
from training.model import speech_lengths
from training.sequence import PromptFormat, collate_tokens
from training.stream import CutStream, Source, StreamState, mix_probabilities, resolve

SPEECH_TOKENS_PER_SECOND = 12.5


def open_cuts(spec: str | Path) -> CutSet:
    """A lazy CutSet from a manifest file, a pipeline output directory (its cuts.jsonl.gz), a Lhotse
    Shar directory (cuts.NNNNNN.jsonl.gz + recording.NNNNNN.tar ...) or a Shar fields file; local
    or at any URL lhotse opens (http(s), s3://, gs://, ... through smart_open; see stream.resolve)."""
    where = resolve(spec)
    if where.manifest is not None:
        return CutSet.from_jsonl_lazy(where.manifest)
    return CutSet.from_shar(fields=where.shar)


class CutFilter:
    """Keeps the cuts the model can take and counts the others by reason (nothing is dropped
    silently): cuts longer than Whisper's 30 s window (`max_cut_duration`) and, when
    `max_target_tokens` is set, targets longer than that many tokens with the eos (OSUM drops
    targets over 200 tokens), and cuts whose audio would run a shell command or fetch a URL the
    policy does not allow (osum_data/sources.py; `unsafe_source:*`). `record_ids` also keeps the
    id and reason of every skipped cut (dev and test sets, whose skipped cuts decoding lists)."""

    def __init__(
        self,
        max_duration: float,
        max_target_tokens: int | None = None,
        fmt: PromptFormat | None = None,
        record_ids: bool = False,
    ):
        if max_target_tokens is not None and fmt is None:
            raise ValueError("a target token cap needs the prompt format's tokenizer")
        self.max_duration = max_duration
        self.max_target_tokens = max_target_tokens
        self.fmt = fmt
        self.counts: Counter[str] = Counter()
        self.ids: dict[str, str] | None = {} if record_ids else None

    def reason(self, cut: Cut) -> tuple[str, str] | None:
        """(code, human reason) of a cut to skip, None for a cut to keep."""
        unsafe = source_problem(cut)  # a `command`/`url` source is never decoded unless allowed
        if unsafe is not None:
            return unsafe
        if cut.duration > self.max_duration:
            return "too_long", f"{cut.duration:.2f} s is longer than {self.max_duration:g} s"
        if self.max_target_tokens is not None:
            n = len(self.fmt.encode((cut.custom or {}).get("target") or "")) + 1
            if n > self.max_target_tokens:
                return "target_too_long", f"target of {n} tokens with eos exceeds {self.max_target_tokens}"
        return None

    def __call__(self, cut: Cut) -> bool:
        why = self.reason(cut)
        if why is None:
            return True
        if self.ids is None:
            self.counts[why[0]] += 1
        elif cut.id not in self.ids:  # a probe and the real pass both see the cut: count it once
            self.ids[cut.id] = why[1]
            self.counts[why[0]] += 1
        return False

    @property
    def skipped(self) -> int:
        return sum(self.counts.values())


def has_at_least(cuts: CutSet, n: int) -> bool:
    """Whether iterating `cuts` yields `n` cuts (reads at most n; a lazy set restarts on each pass)."""
    return sum(1 for _ in itertools.islice(iter(cuts), n)) >= n


def training_stream(
    specs: list[str],
    weights: list[float] | None,
    seed: int,
    keep: Callable[[Cut], bool] | None = None,
    temperature: float | None = None,
) -> CutStream:
    """The training input (stream.py): one source read in epochs, or several mixed for the whole
    run with `weights` (probabilities) or, with `temperature`, by their hours (CutSet.mux alone only
    interleaves; once the small set is exhausted the mix would be the large one alone)."""
    sources = [Source(s, seed=seed) for s in specs]
    p = mix_probabilities(sources, weights, temperature) if len(sources) > 1 else None
    return CutStream(sources, p, seed=seed, keep=keep)


def mix(
    specs: list[str],
    weights: list[float] | None,
    seed: int,
    max_cut_duration: float,
    temperature: float | None = None,
) -> CutSet:
    """The training stream as a CutSet (cuts over `max_cut_duration` skipped)."""
    return CutSet(training_stream(specs, weights, seed, CutFilter(max_cut_duration), temperature))


def estimate_tokens(cut: Cut, prompt_tokens: int = 32) -> float:
    """LLM sequence length without tokenising (the sampler sees thousands of cuts per second):
    instruction + 12.5 speech embeddings per second + target at ~3 UTF-8 bytes per token."""
    target = (cut.custom or {}).get("target") or ""
    return prompt_tokens + SPEECH_TOKENS_PER_SECOND * cut.duration + len(target.encode("utf-8")) / 3 + 1


@dataclass
class TokenAwareConstraint(TimeConstraint):
    """Lhotse's duration constraint plus a cap on padded LLM tokens (batch size x longest sequence),
    as OSUM caps batches by frames and tokens: long targets (chat answers, timestamps) would
    otherwise blow the memory of a batch that fits by duration."""

    max_tokens: int | None = None
    longest_tokens: float = 0.0

    def add(self, example: Cut) -> None:
        super().add(example)
        self.longest_tokens = max(self.longest_tokens, estimate_tokens(example))

    def exceeded(self) -> bool:
        if self.max_tokens is not None and self.num_cuts * self.longest_tokens > self.max_tokens:
            return True
        return super().exceeded()

    def close_to_exceeding(self) -> bool:
        if self.max_tokens is not None and (self.num_cuts + 1) * self.longest_tokens > self.max_tokens:
            return True
        return super().close_to_exceeding()

    def reset(self) -> None:
        super().reset()
        self.longest_tokens = 0.0


def make_sampler(
    cuts: CutSet, cfg: DataConfig, seed: int, world_size: int, rank: int, shuffle: bool, finite: bool = True
):
    """Duration-bucketed batches (`cfg.bucketing`), else random ones. A finite set with fewer cuts
    than `num_buckets` cannot be split into buckets (Lhotse asserts): it is batched plainly."""
    constraint = TokenAwareConstraint(
        max_duration=cfg.max_duration, max_cuts=cfg.max_cuts, max_tokens=cfg.max_tokens
    )
    if cfg.bucketing and cfg.num_buckets > 1 and not (finite and not has_at_least(cuts, cfg.num_buckets)):
        return DynamicBucketingSampler(
            cuts,
            constraint=constraint,
            num_buckets=cfg.num_buckets,
            shuffle=shuffle,
            buffer_size=cfg.buffer_size,
            num_cuts_for_bins_estimate=min(cfg.buffer_size, 10000),
            world_size=world_size,
            rank=rank,
            seed=seed,
        )
    return DynamicCutSampler(
        cuts, constraint=constraint, shuffle=shuffle, world_size=world_size, rank=rank, seed=seed
    )


@dataclass(frozen=True)
class Position:
    """Where a batch sits in the stream; the checkpoint stores the last consumed one."""

    epoch: int
    in_epoch: int  # 1-based index of this batch within its epoch (on this rank)
    index: int  # global batch counter (on this rank), across epochs
    stream: StreamState | None = None  # the input stream's state when the sampler made this batch


class PositionedSampler:
    """Wraps a Lhotse sampler: endless epochs, each batch tagged with its Position, and a start
    position to go to. Exact (default): the sampler is replayed from the epoch's start up to it
    (only manifests are read, no audio), giving the very same batches. `fast`: the input stream
    restarts at the position's stream state (skipping at the source) with the sampler's buffers
    empty: no replay, any number of ranks, but the cuts that sat in the sampler's buffer at the
    checkpoint (at most data.buffer_size) are not seen in that epoch."""

    def __init__(
        self,
        sampler: Any,
        start: Position | None = None,
        epochs: int | None = None,
        stream: CutStream | None = None,
        fast: bool = False,
    ):
        self.sampler = sampler
        self.start = start or Position(0, 0, 0)
        self.epochs = epochs  # None: endless (training counts steps, not epochs)
        self.stream = stream
        self.fast = fast and stream is not None and self.start.stream is not None

    def __iter__(self) -> Iterator[tuple[Position, CutSet]]:
        epoch, skip, index = self.start.epoch, self.start.in_epoch, self.start.index
        jump = self.fast
        while self.epochs is None or epoch < self.epochs:
            n, resumed_mid_epoch = 0, False
            if self.stream is not None:
                if jump:
                    self.stream.begin(self.start.stream)
                    n, skip, jump, resumed_mid_epoch = skip, 0, False, True
                else:
                    self.stream.begin(epoch=epoch)
            self.sampler.set_epoch(epoch)
            first = n
            for cuts in self.sampler:
                n += 1
                if n <= skip:
                    continue
                index += 1
                yield Position(epoch, n, index, self.stream.snapshot() if self.stream else None), cuts
            if n == first and not resumed_mid_epoch:  # (a resumed epoch's rest may well be empty)
                if self.epochs is not None:
                    return  # an empty dev/test set (or every cut skipped): nothing to evaluate
                raise ValueError("the training manifest yields no batch (empty, or every cut filtered out)")
            epoch, skip = epoch + 1, 0


def _seed_for(seed: int, index: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}\0{index}".encode()).digest()[:8], "big") % 2**63


def load_audio(cut: Cut) -> torch.Tensor:
    if cut.sampling_rate != SAMPLING_RATE:
        cut = cut.resample(SAMPLING_RATE)
    audio = cut.load_audio()
    return torch.from_numpy(audio[0] if audio.ndim > 1 else audio)


class SpeechLLMDataset(torch.utils.data.Dataset):
    """Map-style dataset whose 'index' is (Position, CutSet): one item is one padded batch.

    `with_targets=False` builds decoding batches: left-padded, no target, no augmentation.
    `boundary_tokens`: speech positions the adapter adds around each utterance (osum: 2)."""

    def __init__(
        self,
        fmt: PromptFormat,
        cfg: DataConfig,
        seed: int,
        train: bool = True,
        with_targets: bool = True,
        boundary_tokens: int = 0,
    ):
        self.boundary_tokens = boundary_tokens
        self.fmt = fmt
        self.cfg = cfg
        self.seed = seed
        self.train = train
        self.with_targets = with_targets

    def instruction(self, cut: Cut, gen: torch.Generator) -> str:
        custom = cut.custom or {}
        if not self.train or self.cfg.instruction == "stored":
            if not custom.get("instruction"):
                raise ValueError(f"cut {cut.id} has no custom.instruction (run the template stage)")
            return custom["instruction"]
        from osum_data.tasks import prompt_language, prompt_pool, registry

        # Per-sample instructions (QA questions) and reasoning targets (whose instruction carries a
        # "reason first" suffix) have no pool to redraw from: keep what the sample says.
        if custom.get("reasoning") or registry().task_for_key(custom["task"])[0].instruction == "sample":
            return custom["instruction"]
        sup = cut.supervisions[0] if cut.supervisions else None
        lang = (
            prompt_language(sup.language if sup else None)
            if self.cfg.instruction_language == "auto"
            else self.cfg.instruction_language
        )
        pool = prompt_pool(lang)[custom["task"]]
        return pool[int(torch.randint(len(pool), (1,), generator=gen))]

    def __getitem__(self, item: tuple[Position, CutSet]) -> dict[str, Any]:
        pos, cuts = item
        gen = torch.Generator().manual_seed(_seed_for(self.seed, pos.index))
        mels, samples, tasks, ids, targets, durations = [], [], [], [], [], []
        for cut in cuts:
            custom = cut.custom or {}
            if "task" not in custom or "target" not in custom:
                raise ValueError(f"cut {cut.id} has no custom.task/custom.target: not a task sample")
            mel = log_mel(load_audio(cut), self.cfg.n_mels)
            if self.train and self.cfg.spec_augment is not None:
                mel = spec_augment(mel, self.cfg.spec_augment, gen)
            n_speech = int(speech_lengths(torch.tensor(mel.shape[1]), self.boundary_tokens))
            target = custom["target"] if self.with_targets else None
            samples.append(self.fmt.sample(self.instruction(cut, gen), n_speech, target))
            mels.append(mel)
            tasks.append(custom["task"])
            ids.append(cut.id)
            targets.append(custom["target"])
            durations.append(cut.duration)
        mel_lens = torch.tensor([m.shape[1] for m in mels])
        mel = torch.zeros(len(mels), self.cfg.n_mels, int(mel_lens.max()))
        for i, m in enumerate(mels):
            mel[i, :, : m.shape[1]] = m
        batch = collate_tokens(samples, self.fmt.pad_id, left_pad=not self.with_targets)
        batch.update(
            mel=mel,
            mel_lens=mel_lens,
            tasks=tasks,
            ids=ids,
            targets=targets,
            position=pos,
            audio_seconds=float(sum(durations)),
            audio_frames=int(mel_lens.sum()),
            padded_frames=int(mel.shape[0] * mel.shape[2]),
            tokens=int(batch["attention_mask"].sum()),
            padded_tokens=int(batch["attention_mask"].numel()),
        )
        return batch


def make_loader(
    cuts: CutSet | CutStream,
    fmt: PromptFormat,
    cfg: DataConfig,
    seed: int,
    world_size: int = 1,
    rank: int = 0,
    train: bool = True,
    with_targets: bool = True,
    start: Position | None = None,
    epochs: int | None = None,
    pin_memory: bool = False,
    boundary_tokens: int = 0,
    fast_resume: bool = False,
) -> torch.utils.data.DataLoader:
    """`train`: shuffled, augmented, endless unless `epochs`; else one pass in manifest order,
    where cuts the model cannot take (over `max_cut_duration`) are skipped and listed in the
    returned loader's `cut_filter` (dev sets are not filtered by the pipelines' training filters).
    `with_targets=False`: decoding batches. `pin_memory`: page-locked batches, so that the copy
    to a GPU with `non_blocking=True` really overlaps with compute. A CutStream (training) is
    positioned per epoch and can be resumed `fast_resume` (see PositionedSampler)."""
    stream = cuts if isinstance(cuts, CutStream) else None
    if stream is not None:
        cuts = CutSet(stream)
    cut_filter = None
    if not train:
        cut_filter = CutFilter(cfg.max_cut_duration, record_ids=True)
        cuts = cuts.filter(cut_filter)
    sampler = make_sampler(
        cuts,
        cfg,
        seed,
        world_size,
        rank,
        shuffle=train and cfg.shuffle,
        finite=not (stream is not None and stream.endless),
    )
    dataset = SpeechLLMDataset(fmt, cfg, seed, train, with_targets, boundary_tokens)
    loader = torch.utils.data.DataLoader(
        dataset,
        sampler=PositionedSampler(sampler, start, epochs, stream, fast_resume),
        batch_size=None,
        num_workers=cfg.num_workers,
        # A private generator: creating the loader must not consume the global RNG (exact resume).
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
        pin_memory=pin_memory,
    )
    loader.cut_filter = cut_filter
    return loader
