"""Persona speech, part 1: who speaks, and what they say (DESIGN §6, the LLM-generated age/gender data).

- `personas` (source stage): `n` audio-less cuts, each with `custom.persona` = age bucket, gender,
  emotion, topic and language, from `personas.yaml`. Deterministic for the pipeline seed; the age x
  gender cells are visited in turn so both stay balanced, the emotion shifts per cell, the topic is a
  seeded draw among those that suit the age.
- `llm_persona_utterance`: the LLM writes one short utterance for each persona (sampled, with a seed
  fixed by the cut id, so two personas alike still say different things); the quality filters drop
  refusals, self-naming, `<`/`>`, wrong length or language and duplicates within the shard. The text
  becomes the supervision's transcript (`label_source.text = llm:<model>`).

The `tts` stage (synth/tts_stage.py) then voices each utterance and puts the persona's labels on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from lhotse import MonoCut, SupervisionSegment
from lhotse.cut import Cut
from lhotse.utils import fastcopy
from pydantic import BaseModel, Field

from osum_data.label.llm_stages import LLMStage, load_template, reject_of, template_version
from osum_data.llm.client import LLMRequest
from osum_data.llm.filters import Deduper, LengthBounds, check_text
from osum_data.llm.settings import LLMSettings
from osum_data.run.params import ExistingFile
from osum_data.run.stage import Reject, StageContext, StageResult, register_stage, source_stage
from osum_data.seeded import unit_draw
from osum_data.tasks import registry
from osum_data.yaml_config import read_yaml_table

PERSONAS_YAML = Path(__file__).with_name("personas.yaml")


@cache
def load_personas(path: str | None = None) -> dict[str, Any]:
    """The persona table, checked against the vocabularies (an unknown id is an error naming it)."""
    source = Path(path) if path else PERSONAS_YAML
    data = read_yaml_table(source, "persona table")
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping with ages, genders, emotions and topics")
    reg = registry()
    for field, vocab in (("ages", "age"), ("genders", "gender"), ("emotions", "emotion")):
        values = data.get(field) or []
        if not isinstance(values, list) or not values:
            raise ValueError(f"{source}: '{field}' must be a non-empty list")
        for value in values:
            reg.vocabulary(vocab).get(value)  # LabelError naming the value
    topics = data.get("topics")
    if not topics or not isinstance(topics, list) or not all(isinstance(t, dict) for t in topics):
        raise ValueError(f"{source}: 'topics' must be a non-empty list of mappings")
    for topic in topics:
        for age in topic.get("ages") or []:
            if age not in data["ages"]:
                raise ValueError(f"{source}: topic {topic} names age {age!r}, not one of 'ages'")
    return data


def _check(p: dict[str, Any]) -> None:
    """At load time (the driver, before Ray starts): the persona table reads and names known labels."""
    try:
        load_personas(p["table"])
    except ValueError as e:  # LabelError included
        raise ValueError(f"table: {e}") from None


def _excluded(persona: dict[str, str], rules: list[dict[str, str]]) -> bool:
    return any(all(persona.get(k) == v for k, v in rule.items()) for rule in rules)


def persona_plan(n: int, seed: int, language: str, path: str | None = None) -> list[dict[str, str]]:
    """The first `n` personas of the table's walk (see the module doc)."""
    table = load_personas(path)
    cells = [(a, g) for a in table["ages"] for g in table["genders"]]
    emotions = table["emotions"]
    rules = table.get("exclude") or []
    out: list[dict[str, str]] = []
    i = 0
    while len(out) < n:
        if i > 50 * max(n, len(cells) * len(emotions)):
            raise ValueError(
                f"personas: the exclusions in {path or PERSONAS_YAML} leave too few combinations"
            )
        c = i % len(cells)
        age, gender = cells[c]
        emotion = emotions[(i // len(cells) + c) % len(emotions)]
        topics = [t for t in table["topics"] if age in (t.get("ages") or table["ages"]) and language in t]
        if not topics:
            raise ValueError(f"personas: no topic in {language!r} suits age {age!r}")
        topic = topics[int(unit_draw(seed, "persona_topic", str(i)) * len(topics))][language]
        persona = {"age": age, "gender": gender, "emotion": emotion, "topic": topic, "language": language}
        i += 1
        if not _excluded(persona, rules):
            out.append(persona)
    return out


@source_stage("personas", version=1, check=_check)
def personas(
    ctx: StageContext,
    n: Annotated[int, Field(ge=1, le=1_000_000)] = 48,
    language: Literal["en", "zh"] = "en",
    table: ExistingFile | None = None,
) -> Iterator[Cut]:
    """`n` persona cuts (no audio yet): `custom.persona` and an empty transcript in `language`."""
    for i, persona in enumerate(persona_plan(n, ctx.seed, language, table)):
        cut_id = f"persona-{ctx.seed}-{i:06d}"
        sup = SupervisionSegment(
            id=cut_id, recording_id=cut_id, start=0, duration=0, text="", language=language
        )
        yield MonoCut(
            id=cut_id, start=0, duration=0, channel=0, supervisions=[sup], custom={"persona": persona}
        )


class Utterance(BaseModel):
    utterance: str


def persona_messages(persona: dict[str, str]) -> list[dict[str, str]]:
    t = load_template("persona")
    lang = persona["language"]
    emotion = registry().vocabulary("emotion").get(persona["emotion"])
    user = t["user"][lang].format(
        who=t["who"][lang][persona["age"]][persona["gender"]],
        topic=persona["topic"],
        emotion=emotion.zh if lang == "zh" else emotion.en,
    )
    return [{"role": "system", "content": t["system"][lang]}, {"role": "user", "content": user}]


@register_stage("llm_persona_utterance", version=1)
class LLMPersonaUtterance(LLMStage):
    """The LLM writes what each persona says; it becomes the cut's transcript."""

    def __init__(
        self,
        llm: LLMSettings,
        temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.8,
        max_tokens: Annotated[int, Field(ge=8)] = 96,
    ):
        super().__init__(llm)
        self.temperature, self.max_tokens = temperature, max_tokens

    def __call__(self, cuts: list[Cut], ctx: StageContext) -> StageResult:
        before = self.snapshot()
        result = StageResult()
        todo, requests = [], []
        for cut in cuts:
            persona = (cut.custom or {}).get("persona")
            if not isinstance(persona, dict) or persona.get("language") not in ("en", "zh"):
                result.rejected.append(
                    (cut, Reject("no_persona", f"cut {cut.id} has no usable custom.persona"))
                )
                continue
            seed = int(unit_draw(ctx.seed, "persona_utterance", cut.id) * 2**31)
            params = {"temperature": self.temperature, "seed": seed, "max_tokens": self.max_tokens}
            messages = persona_messages(persona)
            # The line may name its topic; copying the rest of the instruction is parroting (echo).
            todo.append((cut, [m["content"].replace(persona["topic"], "\n") for m in messages]))
            requests.append(LLMRequest(cut.id, messages, Utterance, template_version("persona"), params))
        deduper = Deduper()
        length = load_template("persona")["length"]
        for (cut, prompt), res in zip(todo, self.ask(requests), strict=True):
            if not res.ok:
                result.rejected.append((cut, reject_of(res)))
                continue
            lang = cut.custom["persona"]["language"]
            text = " ".join(res.value.utterance.split()).strip("\"'“”")
            verdict = check_text(text, lang, LengthBounds(**length[lang]), deduper, echo_of=prompt)
            if verdict is not None:
                code, reason = verdict
                result.rejected.append((cut, Reject(code, f"cut {cut.id}: {reason}")))
                continue
            sup = cut.supervisions[0]
            custom = dict(sup.custom or {})
            custom["label_source"] = {**(custom.get("label_source") or {}), "text": self.source}
            result.kept.append(fastcopy(cut, supervisions=[fastcopy(sup, text=text, custom=custom)]))
        result.counters = self.counters_since(before)
        return result
