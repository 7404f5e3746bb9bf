"""The training stream: input sources (CutSet manifests or Lhotse Shar, local or at any URL lhotse
opens), mixed deterministically, with a position that a resumed run can jump to.

A source is read in epochs; Shar shards are shuffled per epoch (seeded), a manifest is read in
its order (the bucketing sampler's buffer shuffles). Several sources are mixed draw by draw: draw i
goes to a source chosen by a hash of (seed, i), so the mix has no hidden RNG state. The stream's
state is the draw count and each source's (epoch, items read in that epoch); `begin(state)`
restarts it there by skipping at the source: whole Shar shards by their cut counts, manifest lines
without decoding them. That is what resuming at step 100k costs instead of replaying the sampler.

Mixing weights are probabilities (`--weights 3 1`: three draws of the first for one of the
second), or, with `data.mix_temperature` T, p_k ~ (w_k * hours_k)^(1/T): T = 1 samples in
proportion to the data (with w_k as repetition factors, like OSUM's data list weights), larger T
flattens the mix towards uniform, so small tasks are seen more without re-running pipelines.
"""

from __future__ import annotations

import hashlib
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

SHAR_FILE = re.compile(r"^(?P<field>[A-Za-z_][A-Za-z0-9_]*)\.(?P<index>\d{6})\.")


def is_url(spec: str) -> bool:
    return "://" in spec or spec.startswith("pipe:")


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
            raise ValueError(f"{where}: field {field!r} has shards {sorted(shards)}, expected 0..{n - 1}")
    return {field: [shards[i] for i in range(n)] for field, shards in fields.items()}


def _list_url(url: str) -> list[str]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    try:
        names = fs.ls(root, detail=False)
    except Exception as e:  # noqa: BLE001 - any backend error: name the URL and the way out
        raise FileNotFoundError(
            f"{url}: cannot list it ({type(e).__name__}: {e}); pass a Shar fields file (YAML/JSON "
            f"{{cuts: [...], recording: [...]}}) or the manifest's URL instead"
        ) from e
    return [n if "://" in n else fs.unstrip_protocol(n) for n in names]


@dataclass(frozen=True)
class Resolved:
    manifest: str | None = None  # a CutSet JSONL (gz) path or URL
    shar: dict[str, list[str]] | None = None  # Lhotse Shar fields -> shards


def resolve(spec: str | Path) -> Resolved:
    """What a `--train`/`--dev` spec points at: a manifest file (local or URL), a pipeline output
    directory (its cuts.jsonl.gz), a Shar directory (local or URL, listed with fsspec), or a Shar
    fields file (YAML/JSON: Lhotse's `fields` argument, e.g. {cuts: [s3://...], recording: [...]})."""
    s = str(spec)
    if s.endswith((".yaml", ".yml", ".json")):
        from osum_data.sources import current_policy
        from osum_data.yaml_config import load_yaml

        if not is_url(s) and not Path(s).exists():
            raise FileNotFoundError(f"Shar fields file not found: {s}")
        with open_best(s, "r") as f:
            fields = load_yaml(f.read())
        if not isinstance(fields, dict) or not isinstance(fields.get("cuts"), list):
            raise ValueError(f"{s}: a Shar fields file maps field names to shard lists and needs 'cuts'")
        n = len(fields["cuts"])
        bad = {k: len(v) for k, v in fields.items() if len(v) != n}
        if bad:
            raise ValueError(f"{s}: every field needs {n} shards like 'cuts'; got {bad}")
        piped = [str(x) for v in fields.values() for x in v if str(x).startswith("pipe:")]
        if piped and not current_policy().allow_command:  # (lhotse runs `pipe:` entries in a shell)
            raise ValueError(
                f"{s}: shard {piped[0][:120]!r} runs a shell command; refused without "
                "OSUM_ALLOW_COMMAND_SOURCES=1 (osum_data/sources.py)"
            )
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
    """One input, read in epochs from any (epoch, offset): `offset` items of the epoch skipped."""

    def __init__(self, spec: str | Path, seed: int = 0, shuffle_shards: bool = True):
        self.spec = str(spec)
        self.where = resolve(spec)
        self.seed = seed
        self.shuffle_shards = shuffle_shards
        self._shard_sizes: dict[str, int] = {}

    def shard_order(self, epoch: int) -> list[int]:
        order = list(range(len(self.where.shar["cuts"])))
        if self.shuffle_shards:
            random.Random(f"{self.seed}/{epoch}").shuffle(order)
        return order

    def shard_size(self, cuts_file: str) -> int:
        if cuts_file not in self._shard_sizes:
            with open_best(cuts_file, "r") as f:
                self._shard_sizes[cuts_file] = sum(1 for _ in f)
        return self._shard_sizes[cuts_file]

    def cuts(self, epoch: int = 0, offset: int = 0) -> Iterator[Cut]:
        if self.where.manifest is not None:
            with open_best(self.where.manifest, "r") as f:
                for i, line in enumerate(f):
                    if i >= offset:  # skipped lines are not even decoded
                        yield deserialize_item(decode_json_line(line))
            return
        from lhotse.shar.readers.lazy import LazySharIterator

        shar = self.where.shar
        order = self.shard_order(epoch)
        while order and offset >= self.shard_size(shar["cuts"][order[0]]):
            offset -= self.shard_size(shar["cuts"][order.pop(0)])
        if not order:
            return
        fields = {field: [shards[i] for i in order] for field, shards in shar.items()}
        for i, cut in enumerate(LazySharIterator(fields=fields)):
            if i >= offset:
                yield cut

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


def _uniform(seed: int, i: int) -> float:
    return int.from_bytes(hashlib.sha256(f"{seed}\0mix\0{i}".encode()).digest()[:8], "big") / 2**64


def mix_probabilities(
    sources: list[Source], weights: list[float] | None, temperature: float | None
) -> list[float]:
    w = list(weights) if weights is not None else [1.0] * len(sources)
    if len(w) != len(sources):
        raise ValueError(f"{len(sources)} training manifests but {len(w)} weights")
    if any(x < 0 for x in w) or not any(x > 0 for x in w):
        raise ValueError(f"mixing weights must be >= 0 and not all 0: {w}")
    if temperature is not None:
        if temperature <= 0:
            raise ValueError(f"data.mix_temperature must be > 0, got {temperature}")
        w = [(x * s.hours) ** (1.0 / temperature) for x, s in zip(w, sources, strict=True)]
    total = sum(w)
    return [x / total for x in w]


class CutStream:
    """The iterable the sampler reads. One source: one epoch per pass (the sampler's epochs).
    Several: an endless deterministic mix of endlessly repeated sources, each draw one kept cut of
    the chosen source. `keep` filters cuts after they are read (positions count every cut read, so
    skipping at the source stays exact)."""

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
        self._start = StreamState(0, tuple((0, 0) for _ in sources))
        self.state = self._start

    def begin(self, state: StreamState | None = None, epoch: int | None = None) -> None:
        """The next pass starts at `state`, or at the start of source epoch `epoch` (one source)."""
        if state is None:
            state = StreamState(0, tuple((epoch or 0, 0) for _ in self.sources))
        if len(state.sources) != len(self.sources):
            raise ValueError(
                f"stream position has {len(state.sources)} sources, this run {len(self.sources)}"
            )
        self._start = state

    def snapshot(self) -> StreamState:
        return self.state

    def _choose(self, i: int) -> int:
        u = _uniform(self.seed, i)
        return next((k for k, c in enumerate(self.cum) if u < c), len(self.cum) - 1)

    def __iter__(self) -> Iterator[Cut]:
        start = self._start
        pos = [list(x) for x in start.sources]
        draws = start.draws
        self.state = start

        def publish() -> None:
            self.state = StreamState(draws, tuple((e, o) for e, o in pos))

        if not self.endless:
            epoch, offset = pos[0]
            for cut in self.sources[0].cuts(epoch, offset):
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
                for cut in self.sources[k].cuts(*pos[k]):
                    pos[k][1] += 1
                    if self.keep is None or self.keep(cut):
                        kept += 1
                        yield cut
                if whole_epoch and kept == 0 and not kept_any:
                    raise ValueError(f"training source {self.sources[k].spec} has no cut to train on "
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
