"""STTC labels: an LLM judge keeps the utterances a person could answer, the LLM answers them, and the
quality filters of `osum_data.llm.filters` drop what must not become a training target (DESIGN §6/§7).

Two stages, so a strong judge and a cheap answerer (or the reverse) can be configured apart and each
is cached on its own:
- `llm_answerable`: `{"answerable": bool}` per transcript; `false` rejects the cut as `not_answerable`;
- `llm_answer`: `{"answer": str}` per transcript, optionally told what is known about the voice (gender,
  age, emotion: OSUM-EChat's empathetic replies); the answer must pass the filters (refusal, "cannot
  tell", assistant self-naming, `<`/`>`, generation leftovers, copying 6+ words of the prompt or the
  utterance, length bounds, answer language = question language, duplicates within the shard) and is
  stored as `custom.answer` with `label_source.answer = llm:<model>`. The `template` stage with
  `task: sttc` then writes `transcript<开始回答>answer` (or the answer alone).

Duplicates are found within a shard (what one stage call sees), so the result does not depend on the
worker count; raise `shard_size` to widen the window.
"""

from __future__ import annotations

from typing import Annotated, Any

from lhotse.cut import Cut
from pydantic import BaseModel, Field

from osum_data.label.llm_stages import (
    LLMStage,
    cut_language,
    known_labels,
    load_template,
    reject_of,
    template_version,
    with_labels,
)
from osum_data.llm.client import LLMRequest
from osum_data.llm.filters import Deduper, LengthBounds, check_text
from osum_data.llm.settings import LLMSettings
from osum_data.run.stage import Reject, StageContext, StageResult, register_stage
from osum_data.tasks import registry


class Answerable(BaseModel):
    answerable: bool


class ChatAnswer(BaseModel):
    answer: str


def _language_or_reject(cut: Cut, section: dict[str, Any]) -> str:
    """The cut's language if the templates speak it, else a Reject naming both."""
    lang = cut_language(cut)
    if lang not in section["system"]:
        raise Reject(
            "unsupported_language",
            f"cut {cut.id}: language {lang!r} has no prompt in llm_templates/sttc.yaml "
            f"(have {', '.join(section['system'])})",
        )
    return lang


def _text_or_reject(cut: Cut) -> str:
    text = cut.supervisions[0].text if cut.supervisions else None
    if not text:
        raise Reject("no_transcript", f"cut {cut.id} has no transcript")
    return text


def _promptable(cuts: list[Cut], section: dict[str, Any], result: StageResult) -> list[tuple[Cut, str, str]]:
    """(cut, transcript, language) of the cuts a prompt of `section` can be written for; the
    others go to `result.rejected` with their reason."""
    out = []
    for cut in cuts:
        try:
            out.append((cut, _text_or_reject(cut), _language_or_reject(cut, section)))
        except Reject as r:
            result.rejected.append((cut, r))
    return out


def voice_description(cut: Cut, lang: str) -> str:
    """'female, elderly, sad' (or 女性、老年、悲伤) from the cut's gender/age/emotion labels."""
    labels = known_labels(cut)
    reg = registry()
    names = []
    for field in ("gender", "age", "emotion"):
        if field in labels:
            label = reg.vocabulary(field).labels.get(labels[field])
            if label is not None and not label.generic:
                names.append(label.zh if lang == "zh" else label.en)
    return ("、" if lang == "zh" else ", ").join(names)


@register_stage("llm_answerable", version=1)
class LLMAnswerable(LLMStage):
    """Keep the cuts whose transcript a person could answer (an LLM judge)."""

    def __init__(self, llm: LLMSettings, max_tokens: Annotated[int, Field(ge=4)] = 16):
        super().__init__(llm)
        self.max_tokens = max_tokens

    def __call__(self, cuts: list[Cut], ctx: StageContext) -> StageResult:
        before = self.snapshot()
        t = load_template("sttc")["judge"]
        result = StageResult()
        todo, requests = [], []
        for cut, text, lang in _promptable(cuts, t, result):
            messages = [
                {"role": "system", "content": t["system"][lang]},
                {"role": "user", "content": t["user"][lang].format(text=text)},
            ]
            todo.append(cut)
            requests.append(
                LLMRequest(
                    cut.id, messages, Answerable, template_version("sttc"), {"max_tokens": self.max_tokens}
                )
            )
        for cut, res in zip(todo, self.ask(requests), strict=True):
            if not res.ok:
                result.rejected.append((cut, reject_of(res)))
            elif not res.value.answerable:
                text = cut.supervisions[0].text
                result.rejected.append(
                    (
                        cut,
                        Reject(
                            "not_answerable", f"cut {cut.id}: the judge finds nothing to reply to in {text!r}"
                        ),
                    )
                )
            else:
                result.kept.append(cut)
        result.counters = self.counters_since(before)
        return result


@register_stage("llm_answer", version=1)
class LLMAnswer(LLMStage):
    """Write `custom.answer` for every cut: the LLM's reply to its transcript, filtered."""

    def __init__(
        self,
        llm: LLMSettings,
        use_labels: bool = True,
        max_tokens: Annotated[int, Field(ge=8)] = 160,
        min_units: Annotated[int, Field(ge=1)] | None = None,
        max_units: Annotated[int, Field(ge=1)] | None = None,
    ):
        super().__init__(llm)
        self.use_labels, self.max_tokens = use_labels, max_tokens
        self.min_units, self.max_units = min_units, max_units

    def bounds(self, lang: str) -> LengthBounds:
        spec = load_template("sttc")["length"].get(lang) or load_template("sttc")["length"]["en"]
        return LengthBounds(
            min_units=self.min_units or spec["min_units"], max_units=self.max_units or spec["max_units"]
        )

    def messages(self, cut: Cut, text: str, lang: str) -> list[dict[str, str]]:
        t = load_template("sttc")["answer"]
        described = voice_description(cut, lang) if self.use_labels else ""
        context = t["context"][lang].format(labels=described) if described else ""
        return [
            {"role": "system", "content": t["system"][lang].format(context=context)},
            {"role": "user", "content": t["user"][lang].format(text=text)},
        ]

    def __call__(self, cuts: list[Cut], ctx: StageContext) -> StageResult:
        before = self.snapshot()
        t = load_template("sttc")["answer"]
        result = StageResult()
        todo, requests = [], []
        for cut, text, lang in _promptable(cuts, t, result):
            messages = self.messages(cut, text, lang)
            todo.append((cut, lang, [m["content"] for m in messages]))
            requests.append(
                LLMRequest(
                    cut.id, messages, ChatAnswer, template_version("sttc"), {"max_tokens": self.max_tokens}
                )
            )
        deduper = Deduper()
        for (cut, lang, prompt), res in zip(todo, self.ask(requests), strict=True):
            if not res.ok:
                result.rejected.append((cut, reject_of(res)))
                continue
            answer = " ".join(res.value.answer.split())
            # An answer must not parrot the instructions or the user's words (echo).
            verdict = check_text(answer, lang, self.bounds(lang), deduper, echo_of=prompt)
            if verdict is not None:
                code, reason = verdict
                result.rejected.append((cut, Reject(code, f"cut {cut.id}: {reason}")))
                continue
            result.kept.append(with_labels(cut, self.source, {"answer": answer}))
        result.counters = self.counters_since(before)
        return result
