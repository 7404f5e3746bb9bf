"""Token and request accounting: plain counters a stage puts into summary.json (summed over workers)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class LLMStats:
    requests: int = 0  # HTTP requests sent, retries included
    prompt_tokens: int = 0  # as reported by the server, for every answer received (bad ones too)
    completion_tokens: int = 0
    results: int = 0  # requests answered with a validated result (cached or not)
    cache_hits: int = 0
    retries: int = 0  # transport retries (429, 5xx, timeouts, connection errors)
    malformed_retries: int = 0  # re-asked because the answer failed validation
    structured_fallbacks: int = 0  # response_format forms the server refused
    rejected: Counter = field(default_factory=Counter)  # by code

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rejected"] = dict(sorted(self.rejected.items()))
        d["total_tokens"] = self.prompt_tokens + self.completion_tokens
        return d

    @staticmethod
    def merge(dicts: list[dict[str, Any]]) -> dict[str, Any]:
        """Sum `as_dict()` outputs (one per worker) into one."""
        total: dict[str, Any] = {}
        for d in dicts:
            for k, v in d.items():
                if isinstance(v, dict):
                    sub = total.setdefault(k, {})
                    for code, n in v.items():
                        sub[code] = sub.get(code, 0) + n
                else:
                    total[k] = total.get(k, 0) + v
        return total
