"""SSR labels: the speaking style of each utterance, read from its transcript by an LLM (DESIGN §6).

The answer is constrained to the style vocabulary of `labels.yaml` twice: the JSON schema sent to the
server enumerates the ids (a grammar on llama.cpp, structured output on vLLM/OpenAI), and pydantic
checks it on our side. Options:

- self-consistency: `samples: k` asks k times with different seeds at `temperature`; the majority wins
  and its share of the valid answers is stored as `confidence.style` (with the votes);
- a corpus-level hint (`hint: audiobook`, or `custom.style_hint` on a cut) is a prior, not an override:
  it adds `hint_weight` pseudo-votes to its class. The LLM's answer wins ties; when the prior does flip
  the majority, `label_source.style` says `llm:<model>+prior` and `style_llm` keeps the LLM's choice;
  the confidence always counts the pseudo-votes in the denominator, so disagreement shows.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any, Literal

from lhotse.cut import Cut
from pydantic import AfterValidator, BaseModel, Field

from osum_data.label.llm_stages import (
    LLMStage,
    cut_language,
    load_template,
    prompt_language,
    reject_of,
    with_labels,
)
from osum_data.label.llm_stages import template_version as _version
from osum_data.llm.client import LLMRequest
from osum_data.llm.settings import LLMSettings
from osum_data.run.stage import Reject, StageContext, StageResult, register_stage
from osum_data.tasks import registry

STYLE_IDS: tuple[str, ...] = tuple(registry().vocabulary("style").labels)


class StyleAnswer(BaseModel):
    """What the LLM must answer (module level, so a batch import can find it again)."""

    style: Literal[STYLE_IDS]  # type: ignore[valid-type]


def _known_style(value: str) -> str:
    if value not in STYLE_IDS:
        raise ValueError(f"unknown style; known: {', '.join(STYLE_IDS)}")
    return value


StyleId = Annotated[str, AfterValidator(_known_style)]


def style_messages(text: str, language: str) -> list[dict[str, str]]:
    """System prompt with every style id and its gloss, worked examples as earlier turns, then the
    utterance."""
    t = load_template("ssr")
    lang = prompt_language(language)
    names = t["styles"][lang]
    missing = [s for s in STYLE_IDS if s not in names]
    if missing:
        raise ValueError(f"llm_templates/ssr.yaml: no description of style(s) {missing} in {lang}")
    styles = ", ".join(f"{sid} ({names[sid]})" for sid in STYLE_IDS)
    messages = [{"role": "system", "content": t["system"][lang].format(styles=styles)}]
    for example, style in t["examples"][lang]:
        messages += [
            {"role": "user", "content": t["user"][lang].format(text=example)},
            {"role": "assistant", "content": StyleAnswer(style=style).model_dump_json()},
        ]
    return [*messages, {"role": "user", "content": t["user"][lang].format(text=text)}]


def decide(votes: Counter, hint: str | None, weight: float) -> tuple[str, float, str]:
    """(label, confidence, the LLM's own majority). Ties go to the LLM's votes, then to vocabulary
    order, so the decision never depends on answer order."""
    order = {s: i for i, s in enumerate(STYLE_IDS)}
    llm_top = max(votes, key=lambda s: (votes[s], -order[s]))
    prior = weight if hint else 0.0
    posterior = {
        s: votes.get(s, 0) + (prior if s == hint else 0.0) for s in {*votes, *([hint] if hint else [])}
    }
    label = max(posterior, key=lambda s: (posterior[s], votes.get(s, 0), -order[s]))
    return label, posterior[label] / (sum(votes.values()) + prior), llm_top


@register_stage("llm_style", version=1)
class LLMStyle(LLMStage):
    """Label `custom.style` of every cut from its transcript (k LLM samples, majority, prior)."""

    def __init__(
        self,
        llm: LLMSettings,
        samples: Annotated[int, Field(ge=1, le=15)] = 1,
        temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.7,
        hint: StyleId | None = None,
        hint_weight: Annotated[float, Field(ge=0.0)] = 1.0,
        min_confidence: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0,
        max_tokens: Annotated[int, Field(ge=8)] = 32,
    ):
        super().__init__(llm)
        self.samples, self.temperature = samples, temperature
        self.hint, self.hint_weight, self.min_confidence = hint, hint_weight, min_confidence
        self.max_tokens = max_tokens

    def _params(self, i: int) -> dict[str, Any]:
        params: dict[str, Any] = {"max_tokens": self.max_tokens}
        if self.samples > 1:  # self-consistency: sample, each draw with its own seed (and cache key)
            params.update(temperature=self.temperature, seed=(self.client.settings.seed or 0) + i)
        return params

    def __call__(self, cuts: list[Cut], ctx: StageContext) -> StageResult:
        before = self.snapshot()
        result = StageResult()
        todo, requests = [], []
        for cut in cuts:
            text = cut.supervisions[0].text if cut.supervisions else None
            if not text:
                result.rejected.append((cut, Reject("no_transcript", f"cut {cut.id} has no transcript")))
                continue
            messages = style_messages(text, cut_language(cut))
            todo.append(cut)
            requests += [
                LLMRequest(f"{cut.id}#{i}", messages, StyleAnswer, _version("ssr"), self._params(i))
                for i in range(self.samples)
            ]
        answers = self.ask(requests)
        for n, cut in enumerate(todo):
            mine = answers[n * self.samples : (n + 1) * self.samples]
            valid = [a.value.style for a in mine if a.ok]
            if not valid:
                result.rejected.append((cut, reject_of(mine[0])))
                continue
            hint = (cut.custom or {}).get("style_hint") or self.hint
            if hint is not None and hint not in STYLE_IDS:
                result.rejected.append((cut, Reject("unknown_label", f"cut {cut.id}: style_hint {hint!r}")))
                continue
            votes = Counter(valid)
            label, confidence, llm_top = decide(votes, hint, self.hint_weight)
            if confidence < self.min_confidence:
                result.rejected.append(
                    (
                        cut,
                        Reject(
                            "low_confidence",
                            f"cut {cut.id}: style {label} with confidence {confidence:.2f} < "
                            f"{self.min_confidence} (votes {dict(votes)}, hint {hint})",
                        ),
                    )
                )
                continue
            source = self.source if label == llm_top else f"{self.source}+prior"
            extra: dict[str, Any] = {"confidence": {"style": round(confidence, 4)}}
            if self.samples > 1:
                extra["style_votes"] = dict(sorted(votes.items()))
            if hint is not None:
                extra["style_prior"] = {"hint": hint, "weight": self.hint_weight}
            if label != llm_top:
                extra["style_llm"] = llm_top
            result.kept.append(with_labels(cut, source, {"style": label}, **extra))
        result.counters = self.counters_since(before)
        return result
