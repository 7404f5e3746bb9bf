"""`osum-data prompts expand KEY`: new instructions for a task key, written by the LLM, validated, and
written to a YAML file for a person to review before they join the pool.

Every candidate passes the same rules as the shipped pools (`osum_data.tasks.prompts`: no tag
characters, no label named) plus the answer filters (refusals, self-naming, length, language) and is
new against the whole pool of its language and the other candidates. Requests differ by their example
draw and seed, so each is cached on its own and a re-run reproduces the file without a request.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from osum_data.llm.batch import write_atomic
from osum_data.llm.client import LLMClient, LLMRequest
from osum_data.llm.filters import Deduper, LengthBounds, check_text
from osum_data.seeded import seed_bits
from osum_data.tasks.prompts import LANGUAGES, instruction_problems, leak_patterns, prompt_pool
from osum_data.tasks.registry import registry
from osum_data.yaml_config import ConfigError, load_yaml_file

CONFIG_YAML = Path(__file__).with_name("prompt_expand.yaml")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)、:]|[（(]\d+[)）])\s*")


class Instructions(BaseModel):
    """The answer we ask for (and validate)."""

    instructions: list[str] = Field(min_length=1, max_length=50)


@cache
def expand_config() -> dict[str, Any]:
    return load_yaml_file(CONFIG_YAML)


@dataclass
class ExpandResult:
    key: str
    language: str
    model: str
    accepted: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str, str]] = field(default_factory=list)  # (text, code, reason)
    failed_requests: list[str] = field(default_factory=list)  # LLM-level rejects, with their reasons
    requests: int = 0

    def summary(self) -> str:
        codes: dict[str, int] = {}
        for _, code, _ in self.rejected:
            codes[code] = codes.get(code, 0) + 1
        return (
            f"{self.key} ({self.language}): {len(self.accepted)} accepted, {len(self.rejected)} rejected "
            f"{dict(sorted(codes.items()))}, {len(self.failed_requests)} of {self.requests} requests failed"
        )


def _request(key: str, language: str, index: int, seed: int, temperature: float) -> LLMRequest:
    cfg = expand_config()
    pool = list(prompt_pool(language)[key])
    examples = random.Random(seed_bits(seed, key, language, index)).sample(
        pool, min(cfg["examples"], len(pool))
    )
    user = cfg["user"][language].format(
        task=cfg["tasks"][key][language],
        examples="\n".join(f"- {e}" for e in examples),
        k=cfg["per_request"],
    )
    messages = [
        {"role": "system", "content": cfg["system"][language]},
        {"role": "user", "content": user},
    ]
    return LLMRequest(
        id=f"expand:{language}:{key}:{index}",
        messages=messages,
        schema=Instructions,
        template_version=f"prompt_expand.v{cfg['version']}",
        params={"temperature": temperature, "seed": seed * 1_000_003 + index, "max_tokens": 512},
    )


def clean_candidate(text: str) -> str:
    """Strip the list markup LLMs like to add ('1. ', '- ') and surrounding quotes and spaces."""
    text = _BULLET.sub("", text.strip())
    return re.sub(r"\s+", " ", text.strip().strip("\"'“”‘’「」")).strip()


def check_expand_args(key: str, n: int, language: str) -> None:
    """Fail before any endpoint is started or asked."""
    if language not in LANGUAGES:
        raise ConfigError(f"--language {language!r}: have {LANGUAGES}")
    if key not in registry().all_keys:
        raise ConfigError(f"{key!r} is no task key; keys: {registry().all_keys}")
    if key not in expand_config()["tasks"]:
        raise ConfigError(f"{CONFIG_YAML}: no task description for {key!r}")
    if n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")


def expand_prompts(
    client: LLMClient, key: str, n: int, language: str, seed: int = 0, temperature: float = 0.9
) -> ExpandResult:
    check_expand_args(key, n, language)
    cfg = expand_config()
    pool = prompt_pool(language)
    # Against the whole pool of the language: the pool must stay free of duplicates across keys.
    deduper = Deduper([t for items in pool.values() for t in items])
    leaks = leak_patterns(language)
    bounds = LengthBounds(**cfg["length"][language])
    result = ExpandResult(key=key, language=language, model=client.model)
    max_requests = math.ceil(n / cfg["per_request"]) * cfg["max_requests_factor"]
    index = 0
    while len(result.accepted) < n and index < max_requests:
        missing = math.ceil((n - len(result.accepted)) / cfg["per_request"])
        wave = min(max_requests - index, max(missing, client.settings.concurrency))
        requests = [_request(key, language, i, seed, temperature) for i in range(index, index + wave)]
        index += wave
        result.requests += wave
        for res in client.run(requests):
            if not res.ok:
                result.failed_requests.append(f"{res.code}: {res.reason}")
                continue
            for raw in res.value.instructions:
                text = clean_candidate(raw)
                problems = instruction_problems(text, leaks)
                if problems:
                    code = "label_leak" if "names label" in problems[0] else "invalid"
                    result.rejected.append((text, code, problems[0]))
                    continue
                verdict = check_text(text, language, bounds, deduper)
                if verdict is not None:
                    result.rejected.append((text, *verdict))
                    continue
                if len(result.accepted) < n:
                    result.accepted.append(text)
    return result


def write_review_yaml(result: ExpandResult, path: Path) -> None:
    """The accepted instructions in the pool's own format (`KEY: [...]`), rejects as comments."""
    head = (
        f"# {len(result.accepted)} new {result.language} instructions for {result.key}, written by "
        f"{result.model} (osum-data prompts expand).\n"
        f"# Review them; move the good ones into osum_data/tasks/prompts/{result.language}.yaml under "
        "the same key.\n"
    )
    body = yaml.safe_dump({result.key: result.accepted}, allow_unicode=True, sort_keys=False, width=1000)
    tail = ""
    if result.rejected or result.failed_requests:
        tail = "\n# Rejected candidates (code: reason):\n"
        lines = [f"{code}: {reason}" for _, code, reason in result.rejected]
        lines += [f"request {r}" for r in result.failed_requests]
        tail += "".join("#   " + " ".join(line.splitlines()) + "\n" for line in lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, [head, body, tail])
