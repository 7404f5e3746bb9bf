"""LTU-style question answering (beyond OSUM): task samples whose instruction is a question about the
clip and whose target is the answer.

- `qa_closed`: from the labels a cut carries (gender, age, emotion, and the pitch/speed/energy levels of
  `acoustic_attributes` when present), up to `max_per_cut` questions, each a paraphrase drawn from
  `qa.yaml` with an answer written for the value: key `<QA_CLOSED>`, `custom.qa` = field and value;
- `llm_qa_open`: the LLM writes question-answer pairs from a description of the cut (transcript and the
  same labels, with the measured F0 / rate / level); the quality filters and, optionally, an LLM judge
  ("does the description support this answer?") keep the answerable ones: key `<QA_OPEN>`.

Each QA sample is a new cut (`<id>_qa_<field>`, `<id>_oqa_<n>`) linked by `custom.source_cut_id`; a pair
that fails a filter is rejected as its own derived cut with the reason, so every generated pair ends
in the output or the rejects. With `keep_source: true` the input cut is kept as well (for the next
stage); a cut that is already a QA sample passes through untouched.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from lhotse.cut import Cut
from lhotse.utils import fastcopy
from pydantic import BaseModel, Field

from osum_data.label.llm_stages import (
    LLMStage,
    cut_language,
    known_labels,
    load_template,
    prompt_language,
    reject_of,
    template_version,
)
from osum_data.llm.client import LLMRequest
from osum_data.llm.filters import Deduper, LengthBounds, check_text
from osum_data.llm.settings import LLMSettings
from osum_data.run.stage import Reject, StageContext, StageResult, per_cut_stage, register_stage
from osum_data.seeded import unit_draw
from osum_data.tasks import FormatError, registry, render_target

QA_YAML = Path(__file__).with_name("qa.yaml")
QA_FIELDS = ("gender", "age", "emotion", "pitch", "speed", "energy")
QAField = Literal["gender", "age", "emotion", "pitch", "speed", "energy"]


@cache
def closed_templates() -> dict[str, Any]:
    return yaml.safe_load(QA_YAML.read_text(encoding="utf-8"))


def _qa_keys() -> set[str]:
    reg = registry()
    return {reg.task("qa_closed").key, reg.task("qa_open").key}


def is_qa_sample(cut: Cut) -> bool:
    return (cut.custom or {}).get("task") in _qa_keys()


def _value(labels: dict[str, Any], field: str) -> str | None:
    value = labels.get(field)
    return value.get("level") if isinstance(value, dict) else value


def _qa_cut(cut: Cut, suffix: str, task: str, question: str, answer: str, qa: dict[str, Any]) -> Cut:
    """A QA sample derived from `cut` (same audio and supervision)."""
    return fastcopy(
        cut,
        id=f"{cut.id}_{suffix}",
        custom={
            **(cut.custom or {}),
            "task": registry().task(task).key,
            "instruction": question,
            "target": render_target(task, answer=answer),
            "qa": qa,
            "source_cut_id": cut.id,
        },
    )


@per_cut_stage("qa_closed", version=1)
def qa_closed(
    cut: Cut,
    ctx: StageContext,
    fields: tuple[QAField, ...] = QA_FIELDS,
    max_per_cut: Annotated[int, Field(ge=1)] = 2,
    language: Literal["auto", "en", "zh"] = "auto",
    keep_source: bool = False,
) -> list[Cut]:
    """Closed-ended questions about the cut's known labels, answered from them."""
    if is_qa_sample(cut):
        return [cut]
    if not cut.supervisions:
        raise Reject("no_supervision", f"cut {cut.id} has no supervision")
    lang = prompt_language(cut_language(cut)) if language == "auto" else language
    table = closed_templates()
    labels = known_labels(cut)
    sources = (cut.supervisions[0].custom or {}).get("label_source") or {}
    asked = []
    for field in fields:
        value = _value(labels, field)
        answers = ((table.get(field) or {}).get("answers") or {}).get(lang) or {}
        if value in answers:
            asked.append((unit_draw(ctx.seed, "qa_field", f"{cut.id}\x00{field}"), field, value))
    if not asked:
        raise Reject("no_metadata", f"cut {cut.id} has no label to ask about among {list(fields)}")
    out = [cut] if keep_source else []
    for _, field, value in sorted(asked)[:max_per_cut]:
        questions = table[field]["questions"][lang]
        replies = table[field]["answers"][lang][value]
        question = questions[int(unit_draw(ctx.seed, "qa_question", f"{cut.id}\x00{field}") * len(questions))]
        answer = replies[int(unit_draw(ctx.seed, "qa_answer", f"{cut.id}\x00{field}") * len(replies))]
        qa = {"type": "closed", "field": field, "value": value, "label_source": sources.get(field)}
        out.append(_qa_cut(cut, f"qa_{field}", "qa_closed", question, answer, qa))
    return out


class QAPair(BaseModel):
    question: str
    answer: str


class QAPairs(BaseModel):
    pairs: list[QAPair] = Field(min_length=1, max_length=10)


class Supported(BaseModel):
    answerable: bool


def describe(cut: Cut, lang: str) -> str:
    """The clip in words, from its transcript and labels (what the LLM may use, and nothing else)."""
    t = load_template("qa_open")
    parts = t["describe"][lang]
    levels = t["levels"][lang]
    reg = registry()
    out = []
    text = cut.supervisions[0].text
    if text:
        out.append(parts["transcript"].format(value=text))
    for field, value in known_labels(cut).items():
        if field not in parts:
            continue
        if isinstance(value, dict):  # an acoustic attribute
            out.append(parts[field].format(value=levels.get(value["level"], value["level"]), **value))
        else:
            label = reg.vocabulary(field).labels.get(value)
            if label is not None and not label.generic:
                out.append(parts[field].format(value=label.zh if lang == "zh" else label.en))
    return parts["joiner"].join(out)


@register_stage("llm_qa_open", version=1)
class LLMQAOpen(LLMStage):
    """Open-ended QA pairs about each cut, written by the LLM from its description, filtered."""

    def __init__(
        self,
        llm: LLMSettings,
        pairs: Annotated[int, Field(ge=0, le=10)] = 3,  # 0: no open QA (cuts pass through)
        judge: bool = True,
        keep_source: bool = False,
        temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.7,
        max_tokens: Annotated[int, Field(ge=16)] = 400,
    ):
        super().__init__(llm)
        self.pairs, self.judge, self.keep_source = pairs, judge, keep_source
        self.temperature, self.max_tokens = temperature, max_tokens

    def __call__(self, cuts: list[Cut], ctx: StageContext) -> StageResult:
        before = self.snapshot()
        t = load_template("qa_open")
        version = template_version("qa_open")
        result = StageResult()
        todo, requests = [], []
        for cut in cuts:
            if is_qa_sample(cut) or self.pairs == 0:
                result.kept.append(cut)
                continue
            if not cut.supervisions or not cut.supervisions[0].text:
                result.rejected.append((cut, Reject("no_transcript", f"cut {cut.id} has no transcript")))
                continue
            lang = prompt_language(cut_language(cut))
            description = describe(cut, lang)
            user = t["write"]["user"][lang].format(description=description, n=self.pairs)
            seed = int(unit_draw(ctx.seed, "qa_open", cut.id) * 2**31)
            params = {"temperature": self.temperature, "seed": seed, "max_tokens": self.max_tokens}
            messages = [
                {"role": "system", "content": t["write"]["system"][lang]},
                {"role": "user", "content": user},
            ]
            todo.append((cut, lang, description))
            requests.append(LLMRequest(cut.id, messages, QAPairs, version, params))
        # Candidates that pass the text filters: (cut, n, pair, lang, description).
        candidates: list[tuple[Cut, int, QAPair, str, str]] = []
        for (cut, lang, description), res in zip(todo, self.ask(requests), strict=True):
            if not res.ok:
                if self.keep_source:  # the source stays; the failed request is a derived reject
                    result.kept.append(cut)
                    result.rejected.append(
                        (fastcopy(cut, id=f"{cut.id}_oqa", custom=_link(cut)), reject_of(res))
                    )
                else:
                    result.rejected.append((cut, reject_of(res)))
                continue
            if self.keep_source:
                result.kept.append(cut)
            questions = Deduper()
            q_bounds = LengthBounds(**t["length"]["question"][lang])
            a_bounds = LengthBounds(**t["length"]["answer"][lang])
            made = []
            for n, pair in enumerate(res.value.pairs[: self.pairs]):
                pair = QAPair(question=" ".join(pair.question.split()), answer=" ".join(pair.answer.split()))
                verdict = check_text(pair.question, lang, q_bounds, questions) or check_text(
                    pair.answer, lang, a_bounds
                )
                if verdict is not None:
                    code, reason = verdict
                    made.append((n, Reject(code, f"cut {cut.id} pair {n}: {reason}")))
                else:
                    candidates.append((cut, n, pair, lang, description))
                    made.append((n, None))
            for n, rej in made:
                if rej is not None:
                    result.rejected.append((fastcopy(cut, id=f"{cut.id}_oqa_{n}", custom=_link(cut)), rej))
        verdicts = self._judge(candidates) if self.judge else [None] * len(candidates)
        for (cut, n, pair, _, _), verdict in zip(candidates, verdicts, strict=True):
            qa = {"type": "open", "label_source": self.source}
            try:
                sample = _qa_cut(cut, f"oqa_{n}", "qa_open", pair.question, pair.answer, qa)
            except FormatError as e:
                verdict = Reject("unrenderable_target", f"cut {cut.id} pair {n}: {e}")
            if verdict is not None:
                result.rejected.append((fastcopy(cut, id=f"{cut.id}_oqa_{n}", custom=_link(cut)), verdict))
            else:
                result.kept.append(sample)
        result.counters = self.counters_since(before)
        return result

    def _judge(self, candidates: list[tuple[Cut, int, QAPair, str, str]]) -> list[Reject | None]:
        """The answerability filter: None for a supported pair, else the Reject saying why not."""
        t = load_template("qa_open")["judge"]
        requests = [
            LLMRequest(
                f"{cut.id}_oqa_{n}",
                [
                    {"role": "system", "content": t["system"][lang]},
                    {
                        "role": "user",
                        "content": t["user"][lang].format(
                            description=description, question=pair.question, answer=pair.answer
                        ),
                    },
                ],
                Supported,
                template_version("qa_open"),
                {"max_tokens": 16},
            )
            for cut, n, pair, lang, description in candidates
        ]
        out: list[Reject | None] = []
        for (cut, n, pair, _, _), res in zip(candidates, self.ask(requests), strict=True):
            if not res.ok:
                out.append(reject_of(res))
            elif not res.value.answerable:
                out.append(
                    Reject(
                        "not_answerable",
                        f"cut {cut.id} pair {n}: the judge finds {pair.answer!r} unsupported",
                    )
                )
            else:
                out.append(None)
        return out


def _link(cut: Cut) -> dict[str, Any]:
    """Custom fields of a rejected derived cut: linked to its source, without sample fields."""
    custom = {k: v for k, v in (cut.custom or {}).items() if k not in ("task", "target", "instruction")}
    return {**custom, "source_cut_id": cut.id}
