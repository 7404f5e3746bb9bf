"""The training stream: input sources (CutSet manifests or Lhotse Shar, local or at any URL lhotse
opens), mixed deterministically, with a position that a resumed run can jump to.

A source is read in epochs; Shar shards are shuffled per epoch (seeded), a manifest is read in
its order (the bucketing sampler's buffer shuffles). Several sources are mixed draw by draw: draw i
goes to a source chosen by a hash of (seed, i), so the mix has no hidden RNG state. The stream's
state is the draw count and each source's (epoch, items read in that epoch); `begin(state)`
restarts it there by skipping at the source: whole Shar shards by their cut counts, manifest lines
without decoding them. That is what resuming at step 100k costs instead of replaying the sampler.

Under torchrun each rank reads only its part of every source, at the source: the epoch's shard
order is the same on every rank and rank r of N reads shards r, r + N, ... of it (a manifest:
lines r, r + N, ..., the others skipped undecoded), so each audio byte is read once per epoch in
the whole job (DataLoader workers read nothing from the stream: the sampler runs in the rank's
main process and hands them batches of cuts). Every rank's state counts its own items; an exact
resume restores each rank's own; a fast resume on another number of ranks starts every source
past the furthest point any old rank had read (skipping, never repeating: see CutStream.begin).

An exact resume replays the sampler with `audio` off: Shar is then read from its cuts files only
(metadata), and the cuts still buffered when the replay reaches the checkpoint get their audio
from their own shards (`hydrate`), so a resume reads about a buffer's worth of audio, not the epoch.

Mixing weights are probabilities (`--weights 3 1`: three draws of the first for one of the
second), or, with `data.mix_temperature` T, p_k ~ (w_k * hours_k)^(1/T): T = 1 samples in
proportion to the data (with w_k as repetition factors, like OSUM's data list weights), larger T
flattens the mix towards uniform, so small tasks are seen more without re-running pipelines.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from lhotse.cut import Cut
from lhotse.serialization import decode_json_line, deserialize_item, open_best

from osum_data.errors import OsumError, UsageError
from osum_data.seeded import unit_draw

SHAR_FILE = re.compile(r"^(?P<field>[A-Za-z_][A-Za-z0-9_]*)\.(?P<index>\d{6})\.")


class DataError(OsumError, ValueError):
    """A training input that cannot be used as it is (exit 1): a broken Shar fields file, a source
    with no cut to train on, a cut that is no task sample."""


def is_url(spec: str) -> bool:
    return "://" in spec or spec.startswith("pipe:")


OBJECT_STORES = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs"}  # scheme -> fsspec client package


def check_object_store(spec: str) -> None:
    """A one-line error when `spec` is on an object store whose fsspec client is not installed."""
    import importlib.util

    scheme = spec.split("://", 1)[0] if "://" in spec else ""
    package = OBJECT_STORES.get(scheme)
    if package and importlib.util.find_spec(package) is None:
        raise ModuleNotFoundError(
            f"{spec}: reading {scheme}:// needs the {package} package (pip install {package}; "
            f"its pin is in requirements.txt)"
        )


def _object_store_backend():
    """Lhotse's IO backend with s3:// and gs:// opened through fsspec (s3fs, gcsfs), so manifests,
    Shar cuts files and Shar tars on object stores read like local ones (compression inferred
    from the name, as Lhotse's gzip backend does). Credentials and endpoints are the clients'
    own (AWS_* variables, ~/.aws, AWS_ENDPOINT_URL; GOOGLE_APPLICATION_CREDENTIALS)."""
    from lhotse.serialization import CompositeIOBackend, IOBackend, get_default_io_backend

    class FsspecObjectStore(IOBackend):
        def open(self, identifier, mode: str):
            import fsspec

            check_object_store(str(identifier))
            return fsspec.open(str(identifier), mode, compression="infer").open()

        def handles_special_case(self, identifier) -> bool:
            return str(identifier).split("://", 1)[0] in OBJECT_STORES and "://" in str(identifier)

        def is_applicable(self, identifier) -> bool:
            return self.handles_special_case(identifier)

    return CompositeIOBackend([FsspecObjectStore(), get_default_io_backend()])


def use_object_stores() -> None:
    """Route Lhotse's reads of s3:// and gs:// through fsspec (once; a backend the user chose
    with LHOTSE_IO_BACKEND is kept)."""
    import os

    from lhotse import serialization

    if os.environ.get("LHOTSE_IO_BACKEND") or getattr(serialization, "_osum_object_stores", False):
        return
    serialization.set_current_io_backend(_object_store_backend())
    serialization._osum_object_stores = True


def _shar_fields(names: list[str], where: str) -> dict[str, list[str]]:
    """{field: [shard paths in index order]} from the file names of a Shar directory."""
    fields: dict[str, dict[int, str]] = {}
    for name in names:
        m = SHAR_FILE.match(name.rsplit("/", 1)[-1])
        if m:
            fields.setdefault(m["field"], {})[int(m["index"])] = name
    if "cuts" not in fields:
        raise FileNotFoundError(
            f"{where}: neither cuts.jsonl.gz nor Lhotse Shar shards (cuts.NNNNNN.jsonl.gz)"
        )
    n = len(fields["cuts"])
    for field, shards in fields.items():
        if sorted(shards) != list(range(n)):
            raise DataError(f"{where}: field {field!r} has shards {sorted(shards)}, expected 0..{n - 1}")
    return {field: [shards[i] for i in range(n)] for field, shards in fields.items()}


def _list_url(url: str) -> list[str]:
    import fsspec

    check_object_store(url)

    fs, root = fsspec.core.url_to_fs(url)
    try:
        names = fs.ls(root, detail=False)
    except Exception as e:  # noqa: BLE001 - any backend error: name the URL and the way out
        raise FileNotFoundError(
            f"{url}: cannot list it ({type(e).__name__}: {e}); pass a Shar fields file (YAML/JSON "
            f"{{cuts: [...], recording: [...]}}) or the manifest's URL instead"
        ) from e
    return [n if "://" in n else fs.unstrip_protocol(n) for n in names]


def needs_audio(cut: Cut) -> bool:
    """Whether `cut` was read from a Shar cuts file without its recording field (its audio source
    is still Lhotse's placeholder)."""
    rec = getattr(cut, "recording", None)
    return rec is not None and any(src.type == "shar" for src in rec.sources)



@dataclass(frozen=True)
class Resolved:
    manifest: str | None = None  # a CutSet JSONL (gz) path or URL
    shar: dict[str, list[str]] | None = None  # Lhotse Shar fields -> shards


def resolve(spec: str | Path) -> Resolved:
    """What a `--train`/`--dev` spec points at: a manifest file (local or URL), a pipeline output
    directory (its cuts.jsonl.gz), a Shar directory (local or URL, listed with fsspec), or a Shar
    fields file (YAML/JSON: Lhotse's `fields` argument, e.g. {cuts: [s3://...], recording: [...]})."""
    s = str(spec)
    check_object_store(s)
    if s.split("://", 1)[0] in OBJECT_STORES:
        use_object_stores()
    if s.endswith((".yaml", ".yml", ".json")):
        from osum_data.sources import current_policy
        from osum_data.yaml_config import load_yaml

        if not is_url(s) and not Path(s).exists():
            raise FileNotFoundError(f"Shar fields file not found: {s}")
        with open_best(s, "r") as f:
            fields = load_yaml(f.read())
        if not isinstance(fields, dict) or not isinstance(fields.get("cuts"), list):
            raise DataError(f"{s}: a Shar fields file maps field names to shard lists and needs 'cuts'")
        n = len(fields["cuts"])
        bad = {k: len(v) for k, v in fields.items() if len(v) != n}
        if bad:
            raise DataError(f"{s}: every field needs {n} shards like 'cuts'; got {bad}")
        paths = [str(x) for v in fields.values() for x in v]
        piped = [x for x in paths if x.startswith("pipe:")]
        if piped and not current_policy().allow_command:  # (lhotse runs `pipe:` entries in a shell)
            raise UsageError(
                f"{s}: shard {piped[0][:120]!r} runs a shell command; refused without "
                "OSUM_ALLOW_COMMAND_SOURCES=1 (osum_data/sources.py)"
            )
        for x in paths:
            check_object_store(x)
        if any(x.split("://", 1)[0] in OBJECT_STORES for x in paths):
            use_object_stores()
        return Resolved(shar={k: [str(x) for x in v] for k, v in fields.items()})
    if s.endswith((".jsonl", ".jsonl.gz")):
        if not is_url(s) and not Path(s).exists():
            raise FileNotFoundError(f"manifest not found: {s}")
        return Resolved(manifest=s)
    if is_url(s):
        names = _list_url(s)
        plain = [n for n in names if n.rstrip("/").rsplit("/", 1)[-1] == "cuts.jsonl.gz"]
        if plain:  # a pipeline output directory (its shard files are not Shar)
            return Resolved(manifest=plain[0])
        return Resolved(shar=_shar_fields(names, s))
    path = Path(s)
    if not path.exists():
        raise FileNotFoundError(f"manifest not found: {path}")
    if not path.is_dir():
        return Resolved(manifest=str(path))
    if (path / "cuts.jsonl.gz").exists():
        return Resolved(manifest=str(path / "cuts.jsonl.gz"))
    return Resolved(shar=_shar_fields(sorted(str(p) for p in path.iterdir()), str(path)))


class Source:
    """One input, read in epochs from any (epoch, offset): `offset` items of this rank's part of
    the epoch skipped. `rank`/`world`: which part (see the module docstring)."""

    def __init__(
        self, spec: str | Path, seed: int = 0, shuffle_shards: bool = True, rank: int = 0, world: int = 1
    ):
        self.spec = str(spec)
        self.where = resolve(spec)
        self.seed = seed
        self.shuffle_shards = shuffle_shards
        self.rank, self.world = rank, world
        self._shard_sizes: dict[str, int] = {}
        self.pending: dict[str, int] = {}  # cut id -> shard, of cuts read without audio
        self._hydrated: dict[int, dict[str, Cut]] = {}
        if self.where.shar is not None and len(self.where.shar["cuts"]) < world:
            raise DataError(
                f"{self.spec}: {len(self.where.shar['cuts'])} Shar shard(s) for {world} ranks: each rank "
                f"reads whole shards, so every rank needs at least one (write smaller shards)"
            )

    def shard_order(self, epoch: int) -> list[int]:
        """All shards in this epoch's order (the same on every rank)."""
        order = list(range(len(self.where.shar["cuts"])))
        if self.shuffle_shards:
            random.Random(f"{self.seed}/{epoch}").shuffle(order)
        return order

    def my_shards(self, epoch: int) -> list[int]:
        return self.shard_order(epoch)[self.rank :: self.world]

    def shard_size(self, cuts_file: str) -> int:
        if cuts_file not in self._shard_sizes:
            with open_best(cuts_file, "r") as f:
                self._shard_sizes[cuts_file] = sum(1 for _ in f)
        return self._shard_sizes[cuts_file]

    def _size(self, shard: int) -> int:
        return self.shard_size(self.where.shar["cuts"][shard])

    def _fields(self, shard: int, audio: bool) -> dict[str, list[str]]:
        return {f: [paths[shard]] for f, paths in self.where.shar.items() if audio or f == "cuts"}

    def cuts(self, epoch: int = 0, offset: int = 0, audio: Callable[[], bool] | None = None) -> Iterator[Cut]:
        """This rank's cuts of `epoch` after the first `offset`. `audio()` False: Shar cuts come
        from the cuts files alone (no audio; `hydrate` fetches it later for those that need it)."""
        audio = audio or (lambda: True)
        if self.where.manifest is not None:
            own = 0
            with open_best(self.where.manifest, "r") as f:
                for i, line in enumerate(f):
                    if i % self.world != self.rank:
                        continue  # another rank's line: not even decoded
                    own += 1
                    if own > offset:  # skipped lines are not decoded either
                        yield deserialize_item(decode_json_line(line))
            return
        order = self.my_shards(epoch)
        while order and offset >= self._size(order[0]):
            offset -= self._size(order.pop(0))
        for k, shard in enumerate(order):
            yield from self._shard(shard, offset if k == 0 else 0, audio)

    def _shard(self, shard: int, skip: int, audio: Callable[[], bool]) -> Iterator[Cut]:
        from lhotse.shar.readers.lazy import LazySharIterator

        done = skip
        while True:
            with_audio = audio()
            for i, cut in enumerate(LazySharIterator(fields=self._fields(shard, with_audio))):
                if i < done:
                    continue
                if not with_audio and audio():
                    break  # audio switched on mid-shard: reopen the shard with it
                if not with_audio:
                    self.pending[cut.id] = shard
                done += 1
                yield cut
            else:
                return

    def hydrate(self, cut: Cut) -> Cut:
        """`cut` with its audio, if it was read without (one pass over its shard serves every
        pending cut of that shard)."""
        if not needs_audio(cut) or cut.id not in self.pending:
            return cut
        shard = self.pending.pop(cut.id)
        if cut.id not in self._hydrated.get(shard, {}):
            from lhotse.shar.readers.lazy import LazySharIterator

            want = {i for i, s in self.pending.items() if s == shard} | {cut.id}
            self._hydrated[shard] = {
                c.id: c for c in LazySharIterator(fields=self._fields(shard, True)) if c.id in want
            }
        full = self._hydrated[shard].pop(cut.id)
        if not self._hydrated[shard]:
            del self._hydrated[shard]
        return full

    def offset_after(self, epoch: int, read: list[tuple[int, int]], old_world: int) -> int:
        """This rank's offset in `epoch` that starts it past everything the ranks of another world
        had read: `read` is [(items read in its part, old rank)] of the old ranks in that epoch.
        Manifests: past the furthest line; Shar: past the furthest shard any old rank had opened.
        What lies before that and a slower old rank had not read yet is skipped (bounded by the
        spread between ranks: about a shard per rank), nothing is read twice."""
        if self.where.manifest is not None:
            end = max(((o - 1) * old_world + r + 1) if o > 0 else 0 for o, r in read)
            return max(0, -(-(end - self.rank) // self.world))
        order = self.shard_order(epoch)
        end = 0
        for o, r in read:
            mine = order[r::old_world]
            j, left = 0, o
            while j < len(mine) and left > 0:  # shards opened: the one holding item o included
                left -= self._size(mine[j])
                j += 1
            if j:
                end = max(end, r + (j - 1) * old_world + 1)
        mine = self.my_shards(epoch)
        return sum(self._size(s) for m, s in enumerate(mine) if self.rank + m * self.world < end)

    @cached_property
    def hours(self) -> float:
        """Audio hours of one epoch (metadata only: manifest lines or Shar cuts files)."""
        files = [self.where.manifest] if self.where.manifest else self.where.shar["cuts"]
        seconds = 0.0
        for path in files:
            with open_best(path, "r") as f:
                seconds += sum(float(json.loads(line)["duration"]) for line in f)
        return seconds / 3600


@dataclass(frozen=True)
class StreamState:
    """Where the stream is: mixing draws so far, and (epoch, items read in it) per source."""

    draws: int = 0
    sources: tuple[tuple[int, int], ...] = ()
    world: int = 1  # the number of ranks whose parts the offsets count in


@dataclass(frozen=True)
class Position:
    """Where a batch sits in the stream; the checkpoint stores the last consumed one."""

    epoch: int
    in_epoch: int  # 1-based index of this batch within its epoch (on this rank)
    index: int  # global batch counter (on this rank), across epochs
    stream: StreamState | None = None  # the input stream's state when the sampler made this batch
    # Every rank's stream state at a checkpoint (multi-rank runs): a fast resume on another
    # number of ranks starts past all of them.
    peers: tuple[StreamState, ...] | None = None


def mix_probabilities(
    sources: list[Source], weights: list[float] | None, temperature: float | None
) -> list[float]:
    w = list(weights) if weights is not None else [1.0] * len(sources)
    if len(w) != len(sources):
        raise UsageError(f"{len(sources)} training manifests but {len(w)} weights")
    if any(x < 0 for x in w) or not any(x > 0 for x in w):
        raise UsageError(f"mixing weights must be >= 0 and not all 0: {w}")
    if temperature is not None:
        if temperature <= 0:
            raise UsageError(f"data.mix_temperature must be > 0, got {temperature}")
        w = [(x * s.hours) ** (1.0 / temperature) for x, s in zip(w, sources, strict=True)]
    total = sum(w)
    return [x / total for x in w]


class CutStream:
    """The iterable the sampler reads: this rank's part of the sources (their `rank`/`world`).
    One source: one epoch per pass (the sampler's epochs). Several: an endless deterministic mix
    of endlessly repeated sources, each draw one kept cut of the chosen source. `keep` filters cuts
    after they are read (positions count every cut read, so skipping at the source stays exact).
    `audio` False: Shar is read without audio (an exact resume's replay; see `hydrate`)."""

    def __init__(
        self,
        sources: list[Source],
        probabilities: list[float] | None = None,
        seed: int = 0,
        keep: Callable[[Cut], bool] | None = None,
    ):
        self.sources = sources
        self.p = probabilities or [1.0 / len(sources)] * len(sources)
        self.cum = [sum(self.p[: i + 1]) for i in range(len(self.p))]
        self.seed = seed
        self.keep = keep
        self.endless = len(sources) > 1
        self.world = sources[0].world
        self.audio = True
        self._start = StreamState(0, tuple((0, 0) for _ in sources), self.world)
        self.state = self._start

    def begin(
        self,
        state: StreamState | None = None,
        epoch: int | None = None,
        peers: tuple[StreamState, ...] | None = None,
    ) -> None:
        """The next pass starts at `state`, or at the start of source epoch `epoch` (one source).
        A state saved by another number of ranks (`peers`: every old rank's state; default
        `state` alone) becomes this rank's start past the furthest point any of them had read."""
        if state is None:
            state = StreamState(0, tuple((epoch or 0, 0) for _ in self.sources), self.world)
        if len(state.sources) != len(self.sources):
            raise UsageError(
                f"stream position has {len(state.sources)} sources, this run {len(self.sources)}"
            )
        if state.world != self.world:
            state = self._rebase(list(peers) if peers else [state])
        self._start = state

    def _rebase(self, states: list[StreamState]) -> StreamState:
        old_world = states[0].world
        start = []
        for k, src in enumerate(self.sources):
            epoch = max(s.sources[k][0] for s in states)
            read = [(s.sources[k][1], r) for r, s in enumerate(states) if s.sources[k][0] == epoch]
            start.append((epoch, src.offset_after(epoch, read, old_world)))
        return StreamState(states[0].draws, tuple(start), self.world)

    def snapshot(self) -> StreamState:
        return self.state

    def hydrate(self, cuts: Any) -> Any:
        """`cuts` (a CutSet) with the audio of those read while `audio` was off."""
        pending = [s for s in self.sources if s.pending]
        if not pending:
            return cuts
        from lhotse import CutSet

        def full(cut: Cut) -> Cut:
            for s in pending:
                if cut.id in s.pending:
                    return s.hydrate(cut)
            return cut

        return CutSet.from_cuts([full(c) for c in cuts])

    def _choose(self, i: int) -> int:
        u = unit_draw(self.seed, "mix", str(i))
        return next((k for k, c in enumerate(self.cum) if u < c), len(self.cum) - 1)

    def __iter__(self) -> Iterator[Cut]:
        start = self._start
        pos = [list(x) for x in start.sources]
        draws = start.draws
        self.state = start
        for s in self.sources:  # a new pass: what an abandoned one read without audio is gone
            s.pending.clear()
            s._hydrated.clear()

        def audio() -> bool:
            return self.audio

        def publish() -> None:
            self.state = StreamState(draws, tuple((e, o) for e, o in pos), self.world)

        if not self.endless:
            epoch, offset = pos[0]
            for cut in self.sources[0].cuts(epoch, offset, audio):
                pos[0][1] += 1
                publish()
                if self.keep is None or self.keep(cut):
                    yield cut
            return

        def endless(k: int) -> Iterator[Cut]:
            """Source k's kept cuts, epoch after epoch (positions count every cut read)."""
            kept_any = False
            while True:
                whole_epoch, kept = pos[k][1] == 0, 0
                for cut in self.sources[k].cuts(*pos[k], audio):
                    pos[k][1] += 1
                    if self.keep is None or self.keep(cut):
                        kept += 1
                        yield cut
                if whole_epoch and kept == 0 and not kept_any:
                    raise DataError(f"training source {self.sources[k].spec} has no cut to train on "
                                     "(empty, or every cut filtered out)")  # fmt: skip
                kept_any |= kept > 0
                pos[k] = [pos[k][0] + 1, 0]

        iters = [endless(k) for k in range(len(self.sources))]
        while True:
            k = self._choose(draws)
            draws += 1
            cut = next(iters[k])
            publish()
            yield cut


def describe(sources: list[Source], p: list[float]) -> list[dict[str, Any]]:
    return [{"source": s.spec, "probability": round(x, 4)} for s, x in zip(sources, p, strict=True)]
