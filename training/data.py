"""From pipeline manifests to padded batches: CutSets (jsonl.gz) or Lhotse Shar, weighted task
mixing, duration/token-bucketed batches, on-the-fly log-mel, instruction draw, token layout.

Exact resume: every batch carries its position (epoch, index within the epoch, global index). The
trainer checkpoints the position of the last batch it *consumed* (a DataLoader prefetches ahead, so
the sampler's own state is ahead of training), and a resumed run fast-forwards the sampler to it.
Every random choice of a batch (SpecAugment, instruction redraw) comes from a generator seeded by
(seed, global index), so a batch is the same bytes whichever worker builds it and whenever.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lhotse import CutSet
from lhotse.cut import Cut
from lhotse.dataset.sampling.base import SamplingConstraint
from lhotse.dataset.sampling.dynamic import DynamicCutSampler
from lhotse.dataset.sampling.dynamic_bucketing import DynamicBucketingSampler
from lhotse.utils import compute_num_samples

from osum_data.rejects import Reject
from osum_data.seeded import seed_bits
from osum_data.sources import source_problem
from training.adapters import speech_lengths
from training.config import DataConfig
from training.features import HOP, SAMPLING_RATE, log_mel, spec_augment
from training.sequence import PromptFormat, collate_tokens
from training.stream import CutStream, DataError, Position, Source, mix_probabilities, resolve

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
    silently): cuts longer than Whisper's 30 s window (`max_cut_duration`), when
    `max_target_tokens` is set targets longer than that many tokens with the eos (OSUM drops
    targets over 200 tokens), cuts whose audio would run a shell command or fetch a URL the policy
    does not allow (osum_data/sources.py; `unsafe_source:*`), and, once a sampler sets `caps`, a
    cut that alone exceeds a padded batch cap (it could only be batched by breaking the cap). A cut
    is counted once however often it is read (the bucketing sampler's bin estimate, a probe and the
    real pass all read the first cuts). `record_ids` also keeps the reason of every skipped cut
    (dev and test sets, whose skipped cuts decoding lists)."""

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
        self.caps: PaddedBatchCaps | None = None
        self.counts: Counter[str] = Counter()
        self.record_ids = record_ids
        self.ids: dict[str, str] | None = {} if record_ids else None
        self._seen: set[str] = set()

    def reject(self, cut: Cut) -> Reject | None:
        """Why a cut is skipped (the house's one reject: a code and a detail), None to keep it."""
        unsafe = source_problem(cut)  # a `command`/`url` source is never decoded unless allowed
        if unsafe is not None:
            return Reject(*unsafe)
        if cut.duration > self.max_duration:
            return Reject("too_long", f"{cut.duration:.2f} s is longer than {self.max_duration:g} s")
        if self.max_target_tokens is not None:
            n = len(self.fmt.encode((cut.custom or {}).get("target") or "")) + 1
            if n > self.max_target_tokens:
                detail = f"target of {n} tokens with eos exceeds {self.max_target_tokens}"
                return Reject("target_too_long", detail)
        why = self.caps.alone_over(cut) if self.caps is not None else None
        return Reject("over_batch_cap", why) if why is not None else None

    def __call__(self, cut: Cut) -> bool:
        reject = self.reject(cut)
        if reject is None:
            return True
        if cut.id not in self._seen:
            self._seen.add(cut.id)
            self.counts[reject.code] += 1
            if self.ids is not None:
                self.ids[cut.id] = reject.detail
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
    rank: int = 0,
    world: int = 1,
) -> CutStream:
    """The training input (stream.py): one source read in epochs, or several mixed for the whole
    run with `weights` (probabilities) or, with `temperature`, by their hours (CutSet.mux alone only
    interleaves; once the small set is exhausted the mix would be the large one alone). `rank` of
    `world`: this rank's part of every source only (split at the source)."""
    sources = [Source(s, seed=seed, rank=rank, world=world) for s in specs]
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


def cut_frames(cut: Cut) -> int:
    """Mel frames SpeechLLMDataset makes of `cut`: its audio at 16 kHz, one frame per 160 samples."""
    return compute_num_samples(cut.duration, SAMPLING_RATE) // HOP


@dataclass
class PaddedBatchCaps(SamplingConstraint):
    """OSUM's batch rule as a Lhotse constraint: hard caps on the *padded* batch, i.e. batch size x
    the longest cut's mel frames <= `max_frames` (OSUM: max_frames_in_batch 3900) and batch size x
    the longest LLM sequence <= `max_tokens` (max_seq_in_batch 1900), and at most `max_cuts`.

    Lhotse's batcher keeps the cut with which `close_to_exceeding` turns true, so a constraint
    alone can only promise "no more than one cut over" (TimeConstraint's rule, which put 8% of the
    osum config's batches over its 39 s). `exceeded` is the hard rule here; CappedSampler splits the
    one cut over off a batch and batches it later. `tokens_of` measures a cut's sequence (default
    `estimate_tokens`; the trainer passes SequenceLength, the exact count of the dataset's layout).
    """

    max_frames: int | None = None
    max_tokens: int | None = None
    max_cuts: int | None = None
    tokens_of: Callable[[Cut], float] | None = None
    num_cuts: int = 0
    longest_frames: int = 0
    longest_tokens: float = 0.0

    def tokens(self, cut: Cut) -> float:
        return (self.tokens_of or estimate_tokens)(cut)

    def _over(self, n: int, frames: int, tokens: float) -> bool:
        return (
            (self.max_cuts is not None and n > self.max_cuts)
            or (self.max_frames is not None and n * frames > self.max_frames)
            or (self.max_tokens is not None and n * tokens > self.max_tokens)
        )

    def add(self, example: Cut) -> None:
        self.num_cuts += 1
        self.longest_frames = max(self.longest_frames, cut_frames(example))
        self.longest_tokens = max(self.longest_tokens, self.tokens(example))

    def exceeded(self) -> bool:
        return self._over(self.num_cuts, self.longest_frames, self.longest_tokens)

    def close_to_exceeding(self) -> bool:
        """One more cut as long as the longest so far would break a cap (Lhotse's look-ahead)."""
        return self._over(self.num_cuts + 1, self.longest_frames, self.longest_tokens)

    def reset(self) -> None:
        self.num_cuts, self.longest_frames, self.longest_tokens = 0, 0, 0.0

    def measure_length(self, example: Cut) -> float:
        return example.duration  # buckets by duration

    def fits(self, cuts: list[Cut]) -> bool:
        if not cuts:
            return True
        return not self._over(
            len(cuts), max(cut_frames(c) for c in cuts), max(self.tokens(c) for c in cuts)
        )

    def full(self, cuts: list[Cut]) -> bool:
        """`cuts` make a batch: one more as long as their longest would not fit."""
        return bool(cuts) and self._over(
            len(cuts) + 1, max(cut_frames(c) for c in cuts), max(self.tokens(c) for c in cuts)
        )

    def alone_over(self, cut: Cut) -> str | None:
        """Why `cut` cannot be in any batch (None: it can)."""
        frames, tokens = cut_frames(cut), self.tokens(cut)
        if self.max_frames is not None and frames > self.max_frames:
            return f"{frames} mel frames exceed the padded batch cap of {self.max_frames}"
        if self.max_tokens is not None and tokens > self.max_tokens:
            return f"{tokens:.0f} LLM tokens exceed the padded batch cap of {self.max_tokens}"
        return None


class CappedSampler:
    """A Lhotse sampler whose every batch keeps PaddedBatchCaps: the cut over a cap that Lhotse's
    batcher leaves at the end of a batch is split off and held; a held cut joins a later batch it
    fits without raising its longest cut (so padding does not grow), and held cuts that fill a
    batch go out together (at the end of an epoch, whatever is held). Deterministic, so positions
    and the exact resume's replay see the same batches. Cuts that alone exceed a cap never reach
    it: `cut_filter` (applied to its input) skips and counts them."""

    def __init__(self, sampler: Any, caps: PaddedBatchCaps, cut_filter: CutFilter):
        self.sampler = sampler
        self.caps = caps
        self.cut_filter = cut_filter

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def _take(self, held: list[Cut]) -> tuple[list[Cut], list[Cut]]:
        n = 1
        while n < len(held) and self.caps.fits(held[: n + 1]):
            n += 1
        return held[:n], held[n:]

    def __iter__(self) -> Iterator[CutSet]:
        caps, held = self.caps, []
        for batch in self.sampler:
            cuts, over = list(batch), []
            while len(cuts) > 1 and not caps.fits(cuts):
                over.insert(0, cuts.pop())
            if not caps.fits(cuts):  # (the filter keeps such cuts out)
                raise ValueError(f"cut {cuts[0].id}: {caps.alone_over(cuts[0])}")
            keep = []
            for cut in held:
                longest = max(cut_frames(c) for c in cuts)
                if cut_frames(cut) <= longest and caps.fits([*cuts, cut]):
                    cuts.append(cut)
                else:
                    keep.append(cut)
            held = keep + over
            yield CutSet.from_cuts(cuts)
            while caps.full(held):
                out, held = self._take(held)
                yield CutSet.from_cuts(out)
        while held:
            out, held = self._take(held)
            yield CutSet.from_cuts(out)


def batch_caps(cfg: DataConfig, tokens_of: Callable[[Cut], float] | None = None) -> PaddedBatchCaps:
    """The padded caps of `cfg`: data.max_duration seconds of padded audio (100 mel frames per
    second: 39 s is OSUM's 3900 frames), data.max_tokens padded LLM tokens, data.max_cuts."""
    frames = None if cfg.max_duration is None else int(round(cfg.max_duration * SAMPLING_RATE / HOP))
    return PaddedBatchCaps(max_frames=frames, max_tokens=cfg.max_tokens, max_cuts=cfg.max_cuts,
                           tokens_of=tokens_of)  # fmt: skip


def make_sampler(
    cuts: CutSet,
    cfg: DataConfig,
    seed: int,
    world_size: int,
    rank: int,
    shuffle: bool,
    finite: bool = True,
    cut_filter: CutFilter | None = None,
    tokens_of: Callable[[Cut], float] | None = None,
) -> CappedSampler:
    """Duration-bucketed batches (`cfg.bucketing`), else random ones, under hard padded caps
    (PaddedBatchCaps, CappedSampler). A finite set with fewer cuts than `num_buckets` cannot be
    split into buckets (Lhotse asserts): it is batched plainly. Cuts that alone exceed a cap are
    skipped and counted in `cut_filter` (a new one by default; the sampler's `.cut_filter`)."""
    caps = batch_caps(cfg, tokens_of)
    cut_filter = cut_filter or CutFilter(math.inf)
    cut_filter.caps = caps
    cuts = cuts.filter(cut_filter)
    if cfg.bucketing and cfg.num_buckets > 1 and not (finite and not has_at_least(cuts, cfg.num_buckets)):
        sampler = DynamicBucketingSampler(
            cuts,
            constraint=caps,
            num_buckets=cfg.num_buckets,
            shuffle=shuffle,
            buffer_size=cfg.buffer_size,
            num_cuts_for_bins_estimate=min(cfg.buffer_size, 10000),
            world_size=world_size,
            rank=rank,
            seed=seed,
        )
    else:
        sampler = DynamicCutSampler(
            cuts, constraint=caps, shuffle=shuffle, world_size=world_size, rank=rank, seed=seed
        )
    return CappedSampler(sampler, caps, cut_filter)


class PositionedSampler:
    """Wraps a Lhotse sampler: endless epochs, each batch tagged with its Position, and a start
    position to go to. Exact (default): the sampler is replayed from the epoch's start up to it
    with the stream's audio off (manifests and Shar cuts files are read, no audio; the cuts still
    buffered at the position get theirs from their shards), giving the very same batches. `fast`:
    the input stream
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
                    self.stream.begin(self.start.stream, peers=self.start.peers)
                    n, skip, jump, resumed_mid_epoch = skip, 0, False, True
                else:
                    self.stream.begin(epoch=epoch)
                self.stream.audio = skip == 0  # an exact replay reads no audio
            self.sampler.set_epoch(epoch)
            first = n
            for cuts in self.sampler:
                n += 1
                if n <= skip:
                    continue
                index += 1
                if self.stream is not None:
                    self.stream.audio = True
                    cuts = self.stream.hydrate(cuts)
                yield Position(epoch, n, index, self.stream.snapshot() if self.stream else None), cuts
            if n == first and not resumed_mid_epoch:  # (a resumed epoch's rest may well be empty)
                if self.epochs is not None:
                    return  # an empty dev/test set (or every cut skipped): nothing to evaluate
                raise DataError("the training manifest yields no batch (empty, or every cut filtered out)")
            epoch, skip = epoch + 1, 0


DUPLICATE = re.compile(r"_dup\d+$")


def is_duplicate(cut_id: str) -> bool:
    """Lhotse pads the last round of a multi-rank pass with copies of cuts (ids `<id>_dupN`) so
    every rank steps together; they must not be scored twice."""
    return DUPLICATE.search(cut_id) is not None


def load_audio(cut: Cut) -> torch.Tensor:
    if cut.sampling_rate != SAMPLING_RATE:
        cut = cut.resample(SAMPLING_RATE)
    audio = cut.load_audio()
    return torch.from_numpy(audio[0] if audio.ndim > 1 else audio)


def instruction_choices(cut: Cut, cfg: DataConfig, train: bool = True) -> list[str]:
    """The stored instruction (decoding, `data.instruction: stored`, per-sample questions and
    reasoning prompts), else the task's prompt pool in the cut's language."""
    custom = cut.custom or {}
    if not train or cfg.instruction == "stored":
        if not custom.get("instruction"):
            raise DataError(f"cut {cut.id} has no custom.instruction (run the template stage)")
        return [custom["instruction"]]
    from osum_data.tasks import prompt_language, prompt_pool, registry

    # Per-sample instructions (QA questions) and reasoning targets (whose instruction carries a
    # "reason first" suffix) have no pool to redraw from: keep what the sample says.
    if custom.get("reasoning") or registry().task_for_key(custom["task"])[0].instruction == "sample":
        return [custom["instruction"]]
    sup = cut.supervisions[0] if cut.supervisions else None
    lang = (
        prompt_language(sup.language if sup else None)
        if cfg.instruction_language == "auto"
        else cfg.instruction_language
    )
    return list(prompt_pool(lang)[custom["task"]])


class SequenceLength:
    """A cut's LLM sequence length exactly as SpeechLLMDataset lays it out (instruction tokens
    around the speech, speech embeddings with the adapter's boundary tokens, target, eos; with a
    pool, its longest prompt): what the token cap is measured in. Cached by cut id (the bucketing
    sampler measures buffered cuts again and again)."""

    def __init__(self, fmt: PromptFormat, cfg: DataConfig, boundary_tokens: int = 0, train: bool = True):
        self.fmt, self.cfg, self.boundary, self.train = fmt, cfg, boundary_tokens, train
        self._cache: dict[str, int] = {}

    def __call__(self, cut: Cut) -> int:
        n = self._cache.get(cut.id)
        if n is None:
            around = max(sum(map(len, self.fmt.around_speech(i)))
                         for i in instruction_choices(cut, self.cfg, self.train))  # fmt: skip
            target = len(self.fmt.encode((cut.custom or {}).get("target") or "")) + 1
            n = around + int(speech_lengths(cut_frames(cut), self.boundary)) + target
            if len(self._cache) >= 200_000:
                self._cache.clear()
            self._cache[cut.id] = n
        return n


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

    def instruction_choices(self, cut: Cut) -> list[str]:
        """The instructions this cut may be prompted with: its stored one, or its task's pool."""
        return instruction_choices(cut, self.cfg, self.train)

    def instruction(self, cut: Cut, gen: torch.Generator) -> str:
        choices = self.instruction_choices(cut)
        if len(choices) == 1:
            return choices[0]
        return choices[int(torch.randint(len(choices), (1,), generator=gen))]

    def __getitem__(self, item: tuple[Position, CutSet]) -> dict[str, Any]:
        pos, cuts = item
        gen = torch.Generator().manual_seed(seed_bits(self.seed, pos.index) % 2**63)
        mels, samples, tasks, ids, targets, durations = [], [], [], [], [], []
        for cut in cuts:
            custom = cut.custom or {}
            if "task" not in custom or "target" not in custom:
                raise DataError(f"cut {cut.id} has no custom.task/custom.target: not a task sample")
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
            duplicate=[is_duplicate(i) for i in ids],
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
    cut_filter: CutFilter | None = None,
) -> torch.utils.data.DataLoader:
    """`train`: shuffled, augmented, endless unless `epochs`; else one pass in manifest order,
    where cuts the model cannot take (over `max_cut_duration`) are skipped and listed in the
    returned loader's `cut_filter` (dev sets are not filtered by the pipelines' training filters).
    `cut_filter`: the training stream's own filter (build_loaders), which then also counts the
    cuts over a batch cap. Token caps are measured exactly (SequenceLength).
    `with_targets=False`: decoding batches. `pin_memory`: page-locked batches, so that the copy
    to a GPU with `non_blocking=True` really overlaps with compute. A CutStream (training) is
    positioned per epoch and can be resumed `fast_resume` (see PositionedSampler)."""
    stream = cuts if isinstance(cuts, CutStream) else None
    if stream is not None:
        cuts = CutSet(stream)
    if cut_filter is None:
        cut_filter = CutFilter(cfg.max_cut_duration, record_ids=not train)
    if not train:
        cuts = cuts.filter(cut_filter)
    if stream is not None:
        stream.audio = False  # the bucketing sampler's bin estimate reads durations only
        if stream.world > 1:  # the stream is this rank's part already: no split by batches
            world_size, rank = 1, 0
    sampler = make_sampler(
        cuts,
        cfg,
        seed,
        world_size,
        rank,
        shuffle=train and cfg.shuffle,
        finite=not (stream is not None and stream.endless),
        cut_filter=cut_filter,
        tokens_of=SequenceLength(fmt, cfg, boundary_tokens, train),
    )
    if stream is not None:
        stream.audio = True
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
