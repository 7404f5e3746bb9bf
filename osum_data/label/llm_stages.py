"""What every LLM labelling stage shares: one client per worker, prompt templates from YAML, the
language a cut is in, labels written with their source, and the stage's token counters.

A stage built on `LLMStage` is a class stage (`@register_stage`) whose `__init__` takes `llm` (the
runner passes the endpoint it resolved, the embedded server when none is configured). It builds its
requests for the whole batch, sends them with one `ask` (concurrent, cached, validated by the
client), and turns each result into a kept cut or a `Reject` carrying the client's code and reason.

It lives with the stages, not in `osum_data/llm/`: the LLM layer is a client that knows nothing of
stages, rejects or cuts' labels (issue 19).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from lhotse.cut import Cut
from lhotse.utils import fastcopy

from osum_data.llm.client import LLMClient, LLMRequest, LLMResult
from osum_data.llm.language import detect_language, normalize_code
from osum_data.llm.settings import LLMSettings
from osum_data.rejects import Reject

TEMPLATE_DIR = Path(__file__).with_name("llm_templates")
COUNTER_KEYS = (
    "requests",
    "cache_hits",
    "prompt_tokens",
    "completion_tokens",
    "retries",
    "malformed_retries",
)


@cache
def load_template(name: str) -> dict[str, Any]:
    """`osum_data/label/llm_templates/<name>.yaml`: the prompts of one stage (and its `version`, which is part
    of every request's cache key: bump it when a prompt changes)."""
    path = TEMPLATE_DIR / f"{name}.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "version" not in data:
        raise ValueError(f"{path}: expected a mapping with a 'version'")
    return data


def template_version(name: str) -> str:
    return f"{name}.v{load_template(name)['version']}"


def cut_language(cut: Cut, default: str = "en") -> str:
    """The language of the cut's transcript: the supervision's, else detected from the text."""
    sup = cut.supervisions[0]
    return normalize_code(sup.language) or detect_language(sup.text or "") or default


def prompt_language(language: str) -> str:
    """Templates exist in Chinese and English; other languages are prompted in English."""
    return "zh" if language == "zh" else "en"


def with_labels(cut: Cut, source: str, labels: dict[str, Any], **extra: Any) -> Cut:
    """The cut with `labels` put on its first supervision (`custom.<name>`, `gender` as the field),
    each with `custom.label_source[name] = source`; `extra` entries of supervision custom merge in
    (dict values key by key, e.g. `confidence`)."""
    sup = cut.supervisions[0]
    custom = dict(sup.custom or {})
    sources = dict(custom.get("label_source") or {})
    gender = sup.gender
    for name, value in labels.items():
        if name == "gender":
            gender = value
        else:
            custom[name] = value
        sources[name] = source
    custom["label_source"] = sources
    for name, value in extra.items():
        if isinstance(value, dict) and isinstance(custom.get(name), dict):
            custom[name] = {**custom[name], **value}
        else:
            custom[name] = value
    new_sup = fastcopy(sup, gender=gender, custom=custom)
    return fastcopy(cut, supervisions=[new_sup, *cut.supervisions[1:]])


def known_labels(cut: Cut) -> dict[str, Any]:
    """The labels a cut carries that an LLM prompt may use: gender, age, emotion, style and the
    acoustic attribute levels (pitch, speed, energy)."""
    sup = cut.supervisions[0]
    custom = sup.custom or {}
    out: dict[str, Any] = {}
    if sup.gender:
        out["gender"] = sup.gender
    for name in ("age", "emotion", "style"):
        if custom.get(name):
            out[name] = custom[name]
    for name in ("pitch", "speed", "energy"):
        if isinstance(custom.get(name), dict) and custom[name].get("level"):
            out[name] = custom[name]
    return out


def reject_of(result: LLMResult) -> Reject:
    return Reject(
        result.code or "error", result.reason or result.code or "no reason given", transient=result.transient
    )


class LLMStage:
    """Base of the LLM stages: holds the client (one per worker) and counts what each batch cost."""

    def __init__(self, llm: LLMSettings):
        self.client = LLMClient(llm)

    @property
    def source(self) -> str:
        """`label_source` of what this stage writes."""
        return f"llm:{self.client.model}"

    def ask(self, requests: list[LLMRequest]) -> list[LLMResult]:
        return self.client.run(requests) if requests else []

    def snapshot(self) -> dict[str, Any]:
        return self.client.stats.as_dict()

    def counters_since(self, before: dict[str, Any]) -> dict[str, Any]:
        """What the calls since `before` cost (for `StageResult.counters`, summed in summary.json)."""
        after = self.client.stats.as_dict()
        out: dict[str, Any] = {k: after[k] - before[k] for k in COUNTER_KEYS}
        rejected = {
            code: n - before["rejected"].get(code, 0)
            for code, n in after["rejected"].items()
            if n - before["rejected"].get(code, 0)
        }
        if rejected:
            out["llm_rejected"] = rejected
        return out
