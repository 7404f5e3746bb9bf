"""Instruction prompt pools (YAML, one file per language) with validation and deterministic draws.

A pool maps every tag key of the registry to at least `MIN_PER_KEY` instructions. Validation runs on
load, because a missing key silently trains without a prompt on OSUM's side, a prompt naming a
label ("is the speaker happy?") leaks the answer into the input, and a prompt that asks for another
layout than its key's target ("...then on separate lines give the age group" over an inline
`text<ADULT><FEMALE>`) teaches the model to ignore instructions (`instruction_agrees`, rules in
instruction_rules.yaml).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from osum_data.errors import UsageError
from osum_data.seeded import seed_bits
from osum_data.tasks.registry import Registry, registry
from osum_data.yaml_config import load_yaml_file

PROMPT_DIR = Path(__file__).parent / "prompts"
RULES_FILE = Path(__file__).parent / "instruction_rules.yaml"
LANGUAGES = ("zh", "en")
MIN_PER_KEY = 50


class PromptPoolError(UsageError):
    """A prompt pool that breaks one of the rules above."""


def _fold(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip().casefold()


def _leak_patterns(reg: Registry, lang: str) -> list[tuple[str, re.Pattern]]:
    pats = []
    for vocab in reg.vocabularies.values():
        for label in vocab.labels.values():
            if label.generic:
                continue
            name = label.en if lang == "en" else label.zh
            body = re.escape(name.casefold())
            # English names must match as whole words; Chinese has no word boundaries.
            pat = re.compile(rf"\b{body}\b" if lang == "en" else body)
            pats.append((f"{vocab.name}:{label.id}", pat))
    return pats


def leak_patterns(lang: str, reg: Registry | None = None) -> list[tuple[str, re.Pattern]]:
    """(vocabulary:label, pattern) for every label name an instruction in `lang` must not contain."""
    return _leak_patterns(reg or registry(), lang)


def instruction_problems(text: str, leaks: list[tuple[str, re.Pattern]]) -> list[str]:
    """What is wrong with one instruction on its own (empty, tag characters, a label named); shared
    with `osum-data prompts expand`, which checks LLM-written candidates by the same rules."""
    folded = _fold(text)
    problems = []
    if not folded:
        problems.append("empty instruction")
    if "<" in text or ">" in text:
        problems.append(f"tag characters in {text!r}")
    for label, pat in leaks:
        if pat.search(folded):
            problems.append(f"names label {label} in {text!r}")
    return problems


@dataclass(frozen=True)
class _Rule:
    name: str
    contradicts: dict[str, bool]
    why: str
    patterns: tuple[re.Pattern, ...]


@cache
def _rules() -> tuple[_Rule, ...]:
    data = load_yaml_file(RULES_FILE)["rules"]
    rules = []
    for name, spec in data.items():
        unknown = set(spec["contradicts"]) - {"multiline", "transcript", "extra"}
        if unknown:
            raise ValueError(f"{RULES_FILE}: rule {name}: unknown layout facts {sorted(unknown)}")
        pats = tuple(re.compile(p, re.IGNORECASE) for p in spec["phrases"])
        rules.append(_Rule(name, dict(spec["contradicts"]), str(spec["why"]), pats))
    return tuple(rules)


def target_layout(task_key: str, reg: Registry | None = None) -> dict[str, bool]:
    """Facts about the target written under `task_key` that an instruction can contradict:
    `multiline` (never, in our formats: tags and answers are inline), `transcript` (the target holds
    the transcript) and `extra` (it holds more than the transcript)."""
    task, x_only = (reg or registry()).task_for_key(task_key)
    fmt = task.format
    return {
        "multiline": False,
        "transcript": fmt in ("transcript", "timestamps") or (fmt in ("labels", "chat") and not x_only),
        "extra": fmt != "transcript",
    }


def instruction_agrees(task_key: str, instruction: str) -> str | None:
    """None when `instruction` agrees with the layout of `task_key`'s target, else the reason (the
    rule and the phrase that broke it). For the audit and for pool validation; an unknown key is a
    KeyError."""
    layout = target_layout(task_key)
    folded = _fold(instruction)
    for rule in _rules():
        if any(layout[fact] != value for fact, value in rule.contradicts.items()):
            continue
        for pat in rule.patterns:
            m = pat.search(folded)
            if m:
                return f"{rule.name}: {rule.why} ({m.group(0)!r} in {instruction!r} under {task_key})"
    return None


def validate_pool(lang: str, pool: dict[str, list[str]], reg: Registry | None = None) -> None:
    """Raise PromptPoolError naming the key and instruction that break a rule."""
    reg = reg or registry()
    problems = []
    missing = [k for k in reg.pool_keys if k not in pool]
    if missing:
        problems.append(f"keys without a pool: {missing}")
    unknown = [k for k in pool if k not in reg.all_keys]
    if unknown:
        problems.append(f"keys that are no task key: {unknown}")
    per_sample = [k for k in pool if k in reg.all_keys and k not in reg.pool_keys]
    if per_sample:
        problems.append(f"keys whose samples bring their own instruction take no pool: {per_sample}")
    leaks = _leak_patterns(reg, lang)
    seen: dict[str, str] = {}
    for key, items in pool.items():
        if not isinstance(items, list) or len(items) < MIN_PER_KEY:
            problems.append(f"{key}: {len(items or [])} instructions, need >= {MIN_PER_KEY}")
            continue
        for text in items:
            folded = _fold(text)
            problems.extend(f"{key}: {p}" for p in instruction_problems(text, leaks))
            if key in reg.all_keys:
                disagreement = instruction_agrees(key, text)
                if disagreement:
                    problems.append(f"{key}: {disagreement}")
            if folded in seen:
                problems.append(f"{key}: duplicate of an instruction under {seen[folded]}: {text!r}")
            seen[folded] = key
    if problems:
        raise PromptPoolError(f"prompt pool {lang}: " + "; ".join(problems[:20]))


@cache
def prompt_pool(lang: str) -> dict[str, tuple[str, ...]]:
    """The validated pool for `lang` ('zh' or 'en'). Keys whose samples bring their own instruction
    (QA: the question) map to an empty tuple, so every task key is present."""
    if lang not in LANGUAGES:
        raise PromptPoolError(f"no prompt pool for language {lang!r}; have {LANGUAGES}")
    pool = load_yaml_file(PROMPT_DIR / f"{lang}.yaml")
    validate_pool(lang, pool)
    reg = registry()
    return {k: tuple(pool[k]) if k in reg.pool_keys else () for k in reg.all_keys}


def draw_instruction(key: str, lang: str, cut_id: str, seed: int = 0) -> str:
    """A prompt for `key` chosen by a hash of (seed, cut id): the same cut always gets the same one,
    whatever worker or shard handles it."""
    items = prompt_pool(lang)[key]
    if not items:
        raise PromptPoolError(f"{key}: samples of this key bring their own instruction; there is no pool")
    return items[seed_bits(seed, key, cut_id) % len(items)]


def prompt_language(language: str | None, default: str = "en") -> str:
    """Map a supervision language ('zh', 'Chinese', 'en-US', ...) onto a pool language."""
    if not language:
        return default
    lang = language.strip().lower()
    if lang.startswith(("zh", "cmn", "yue", "chinese", "mandarin", "cantonese")):
        return "zh"
    if lang.startswith(("en", "english")):
        return "en"
    return default
