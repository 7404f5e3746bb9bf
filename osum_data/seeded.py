"""The one seeded draw. Randomness in the toolkit is a pure function of (seed, salt, item id), so
a result does not depend on shard size, worker count, order or resume; every step that needs a
random choice derives it here instead of hashing its own way."""

from __future__ import annotations

import hashlib


def seed_bits(seed: int, *parts: object) -> int:
    """64 bits fixed by the seed and the parts (e.g. a salt naming the use, a cut id, a copy)."""
    text = "\x00".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def unit_draw(seed: int, salt: str, item_id: str) -> float:
    """A number in [0, 1) fixed by (seed, salt, item id)."""
    return seed_bits(seed, salt, item_id) / 2**64
