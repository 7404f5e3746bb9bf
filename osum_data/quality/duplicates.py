"""`quality_duplicates`: the same clip twice anywhere in the input, not only within a shard.

A run is split into shards that never see each other, so the stage takes the whole input as a
side input (`of:`, usually the same manifest as `--input`) and builds one index over it, in input
order, once per run: the first actor to need it builds it under a file lock in the run directory
(`quality/`), the others read it. The first occurrence of anything is kept; every later one is
rejected with code `duplicate` and detail `duplicate_of:<first id>` plus what matched:
- `audio`: the decoded samples as 16-bit PCM, hashed (same audio, any container or file name);
- `audio_gain`: a gain-proof fingerprint (signs of frame-to-frame log-energy steps), so a copy
  at another level (re-normalised, 1 % louder) still matches;
- `text`: the normalised transcript (case, punctuation, spacing, Unicode form folded), hashed;
- `near_text`: MinHash over character 5-grams with LSH banding; a candidate counts when its
  estimated Jaccard similarity reaches `near_threshold`.
Text matches count only within one speaker by default: many speakers reading one prompt (read
corpora, CommonVoice) are not duplicates; one speaker with the same words twice usually is. Cuts
of the shard that are not in `of:` are checked against it the same way (deduplication against a
reference set).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import unicodedata
import zlib
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from lhotse import CutSet
from lhotse.cut import Cut
from pydantic import Field

from osum_data.quality.record import mono
from osum_data.rejects import Reject
from osum_data.run.params import SideInput
from osum_data.run.stage import StageResult, register_stage, rejecting

PERMUTATIONS = 64
BANDS = 16  # 16 bands of 4 rows: pairs above ~0.6 Jaccard almost always share a band
SHINGLE = 5
_SPLITMIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))
_SEEDS = np.arange(1, PERMUTATIONS + 1, dtype=np.uint64) * _SPLITMIX[0]


def audio_hash(samples: np.ndarray) -> str:
    pcm = np.round(np.clip(samples, -1, 1) * 32767).astype("<i2")
    return hashlib.sha1(pcm.tobytes()).hexdigest()


def gain_fingerprint(samples: np.ndarray, frame: int = 400) -> str | None:
    """Hash of the signs of log-energy steps between 25 ms frames (a gain adds a constant to every
    log energy and changes no step); None for clips under 8 frames."""
    n = samples.size // frame
    if n < 8:
        return None
    energy = np.log10((samples[: n * frame].astype(np.float64).reshape(n, frame) ** 2).sum(axis=1) + 1e-9)
    steps = np.diff(energy)
    bits = np.where(np.abs(steps) < 0.05, 0, np.sign(steps)).astype(np.int8)  # 0: flat (silence)
    return hashlib.sha1(bits.tobytes()).hexdigest()


def normalise_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def minhash(text: str) -> np.ndarray | None:
    """64 minima of seeded mixes of the CRC32 of each character 5-gram; None for empty text."""
    if not text:
        return None
    padded = f" {text} "
    grams = {padded[i : i + SHINGLE] for i in range(max(1, len(padded) - SHINGLE + 1))}
    h = np.array([zlib.crc32(g.encode()) for g in grams], dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = h[:, None] ^ _SEEDS[None, :]  # splitmix64 finaliser, one seed per permutation
        x = (x ^ (x >> np.uint64(30))) * _SPLITMIX[1]
        x = (x ^ (x >> np.uint64(27))) * _SPLITMIX[2]
        x = x ^ (x >> np.uint64(31))
    return x.min(axis=0)


def bands(signature: np.ndarray) -> list[str]:
    rows = PERMUTATIONS // BANDS
    return [f"{b}:{signature[b * rows : (b + 1) * rows].tobytes().hex()}" for b in range(BANDS)]


class DuplicateIndex:
    """What has been kept so far, by each key; `check` says which kept cut a new one duplicates."""

    def __init__(self, text: str, same_speaker_only: bool, near_threshold: float, audio: bool):
        self.text, self.same_speaker_only, self.near_threshold, self.audio = (
            text, same_speaker_only, near_threshold, audio,
        )  # fmt: skip
        self.first: dict[str, str] = {}  # key -> first cut id
        self.signatures: dict[str, np.ndarray] = {}  # kept cut id -> MinHash
        self.decisions: dict[str, tuple[str, str] | None] = {}  # cut id -> (first id, kind)

    def keys(self, cut: Cut) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.audio and cut.has_recording:
            samples = mono(cut, None)
            out["audio"] = audio_hash(samples)
            out["audio_gain"] = gain_fingerprint(samples)
        sup = cut.supervisions[0] if cut.supervisions else None
        text = normalise_text(sup.text or "") if sup is not None else ""
        if self.text != "off" and text:
            who = f"{sup.speaker or ''}\0" if self.same_speaker_only else ""
            out["text"] = hashlib.sha1(f"{who}{text}".encode()).hexdigest()
            if self.text == "near":
                sig = minhash(text)
                out["near_text"] = (who, sig)
        return out

    def check(self, cut_id: str, keys: dict[str, Any], remember: bool = True) -> tuple[str, str] | None:
        """(first id, what matched) if a kept cut matches `keys`; else None, and (if `remember`)
        `keys` are kept. Cuts outside the reference are checked without remembering them, so the
        answer never depends on which shard a worker saw first."""
        for kind in ("audio", "audio_gain", "text"):
            key = keys.get(kind)
            if key is not None and f"{kind}:{key}" in self.first:
                return self.first[f"{kind}:{key}"], kind
        near = keys.get("near_text")
        band_keys: list[str] = []
        if near is not None:
            who, sig = near
            band_keys = [f"near:{who}{b}" for b in bands(sig)]
            for b in band_keys:
                other = self.first.get(b)
                if other is not None and float(np.mean(self.signatures[other] == sig)) >= self.near_threshold:
                    return other, "near_text"
        if not remember:
            return None
        for kind in ("audio", "audio_gain", "text"):
            if keys.get(kind) is not None:
                self.first.setdefault(f"{kind}:{keys[kind]}", cut_id)
        if near is not None:
            self.signatures[cut_id] = near[1]
            for b in band_keys:
                self.first.setdefault(b, cut_id)
        return None

    def add(self, cut: Cut) -> None:
        self.decisions[cut.id] = self.check(cut.id, self.keys(cut))

    def to_json(self) -> dict[str, Any]:
        return {
            "first": self.first,
            "signatures": {k: v.tobytes().hex() for k, v in self.signatures.items()},
            "decisions": self.decisions,
        }

    def load(self, data: dict[str, Any]) -> None:
        self.first = data["first"]
        self.signatures = {
            k: np.frombuffer(bytes.fromhex(v), dtype=np.uint64) for k, v in data["signatures"].items()
        }
        self.decisions = {k: tuple(v) if v else None for k, v in data["decisions"].items()}


@register_stage("quality_duplicates", version=1)
class Duplicates:
    """Reject later copies (audio, gain-changed audio, same or near-same text) of an earlier cut of
    the whole input (`of`), as `duplicate` with detail `duplicate_of:<id> (<what matched>)`."""

    def __init__(
        self,
        of: SideInput,
        audio: bool = True,
        text: Literal["off", "exact", "near"] = "near",
        same_speaker_only: bool = True,
        near_threshold: Annotated[float, Field(gt=0, le=1)] = 0.8,
    ):
        self.of = of
        self.settings = dict(
            audio=audio, text=text, same_speaker_only=same_speaker_only, near_threshold=near_threshold
        )
        self.index: DuplicateIndex | None = None

    def build(self) -> DuplicateIndex:
        """The index over `of`, in its order (lazy read: memory holds keys, never the cut list)."""
        index = DuplicateIndex(**self.settings)
        for cut in CutSet.from_jsonl_lazy(self.of.path):
            index.add(cut)
        return index

    def index_for(self, run_dir: Path | None) -> DuplicateIndex:
        """Built once per run: under a lock in run_dir/quality, by the first actor that asks."""
        if self.index is not None:
            return self.index
        if run_dir is None:
            self.index = self.build()
            return self.index
        tag = hashlib.sha256(
            json.dumps([self.of.digest, self.settings], sort_keys=True).encode()
        ).hexdigest()[:16]
        folder = Path(run_dir) / "quality"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"duplicates.{tag}.json"
        with open(folder / "duplicates.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not path.exists():
                index = self.build()
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(index.to_json()), encoding="utf-8")
                os.replace(tmp, path)
        index = DuplicateIndex(**self.settings)
        index.load(json.loads(path.read_text(encoding="utf-8")))
        self.index = index
        return index

    def __call__(self, cuts: list[Cut], ctx) -> StageResult:
        index = self.index_for(ctx.run_dir if ctx is not None else None)
        result = StageResult()
        found = 0
        for cut in cuts:
            with rejecting(result, cut):
                match = (
                    index.decisions[cut.id]
                    if cut.id in index.decisions
                    else index.check(cut.id, index.keys(cut), remember=False)
                )
                if match is not None and match[0] != cut.id:
                    found += 1
                    raise Reject("duplicate", f"duplicate_of:{match[0]} ({match[1]})")
                result.kept.append(cut)
        result.counters["duplicates"] = found
        return result
