"""Label chain-of-thought targets (EChat's "dual thinking", C2SER): an optional variant of a sample whose
answer is preceded by a reasoning span composed from the labels the cut carries.

`add_reasoning` runs after `template` (or a QA stage). For a share `ratio` of the label, chat and QA
samples (a draw fixed by the seed and the cut id) it writes, with the phrases of `reasoning.yaml`:

- label tasks: the cues heard (the known labels the target does not ask for: pitch, pace, volume,
  gender, age, emotion, style), then the conclusion naming the target's labels:
  `hello<think>I hear high pitch, a fast pace and a female voice, so this is a cheerful tone.</think><HAPPY>`;
- chat: what the user said and how (EChat: content and paralinguistic cues) before the reply;
- closed QA: the cues, then the asked field's value; open QA: the cues.

The span goes where `parse_target` expects it (right before the tags, the chat separator or the
answer), checked by parsing back; the instruction gets a suffix asking to reason first, and
`custom.reasoning` is true. Samples of other formats (ASR, word timestamps) pass unchanged.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from lhotse.cut import Cut
from pydantic import Field

from osum_data.label.llm_stages import cut_language, known_labels, prompt_language
from osum_data.run.stage import Reject, StageContext, per_cut_stage
from osum_data.tasks import FormatError, LabelError, insert_reasoning, registry

REASONING_YAML = Path(__file__).with_name("reasoning.yaml")


@cache
def reasoning_templates() -> dict[str, Any]:
    return yaml.safe_load(REASONING_YAML.read_text(encoding="utf-8"))


def phrase(field: str, value: str, lang: str) -> str:
    """How a label value is said in a reasoning span: `reasoning.yaml`, else its labels.yaml name."""
    table = reasoning_templates()["phrases"][lang].get(field) or {}
    if value in table:
        return table[value]
    label = registry().vocabulary(field).get(value)
    return label.zh if lang == "zh" else label.en


def _join(items: list[str], s: dict[str, str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return s["list_joiner"].join(items[:-1]) + s["last_joiner"] + items[-1]


def _generic(field: str, value: Any) -> bool:
    if field in ("pitch", "speed", "energy"):
        return False
    label = registry().vocabulary(field).labels.get(value)
    return label is None or label.generic


def compose(cut: Cut, key: str, lang: str) -> str | None:
    """The reasoning text for the sample `cut` written under `key`, or None when there is nothing to
    reason from (no known label besides the answer)."""
    t = reasoning_templates()
    s = t["sentences"][lang]
    task, _ = registry().task_for_key(key)
    labels = {
        f: (v["level"] if isinstance(v, dict) else v)
        for f, v in known_labels(cut).items()
        if not _generic(f, v["level"] if isinstance(v, dict) else v)
    }
    qa = (cut.custom or {}).get("qa") or {}
    asked = (
        task.labels if task.format == "labels" else ((qa.get("field"),) if qa.get("type") == "closed" else ())
    )
    cues = [phrase(f, labels[f], lang) for f in t["cue_order"] if f in labels and f not in asked]
    cue_text = _join(cues, s)
    if task.format == "chat":
        transcript = cut.supervisions[0].text
        cue_part = s["chat_cues"].format(cues=cue_text) if cues else ""
        text = s["chat"].format(transcript=transcript, cue_part=cue_part)
    else:
        answers = []
        for f in asked:
            if f == "events":
                answers += [
                    phrase("events", e, lang) for e in (cut.supervisions[0].custom or {}).get("events") or []
                ]
            elif f in labels or (qa.get("type") == "closed" and f == qa.get("field")):
                answers.append(phrase(f, labels.get(f, qa.get("value")), lang))
        answer = _join(answers, s)
        if cues and answer:
            text = (
                s["cues"].format(cues=cue_text) + s["clause_joiner"] + s["conclusion"].format(answer=answer)
            )
        elif answer:
            text = s["conclusion_alone"].format(answer=answer)
        elif cues:
            text = s["cues"].format(cues=cue_text)
        else:
            return None
    text = text + s["end"]
    return text[:1].upper() + text[1:]


@per_cut_stage("add_reasoning", version=1)
def add_reasoning(
    cut: Cut,
    ctx: StageContext,
    ratio: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0,
    language: Literal["auto", "en", "zh"] = "auto",
    instruction_suffix: bool = True,
) -> Cut:
    """Give a share `ratio` of the samples a reasoning span composed from their labels."""
    custom = cut.custom or {}
    key, target = custom.get("task"), custom.get("target")
    if not key or target is None:
        raise Reject("not_templated", f"cut {cut.id} has no custom.task/target (run template first)")
    try:
        task, _ = registry().task_for_key(key)
    except KeyError as e:
        raise Reject("unknown_task", f"cut {cut.id}: {e.args[0]}") from None
    if task.format not in ("labels", "chat", "answer") or ctx.draw("reasoning", cut.id) >= ratio:
        return cut
    lang = prompt_language(cut_language(cut)) if language == "auto" else language
    try:
        text = compose(cut, key, lang)
        if text is None:
            return cut
        new_target = insert_reasoning(key, target, text)
    except (FormatError, LabelError) as e:
        raise Reject("unrenderable_target", f"cut {cut.id}: {e}") from None
    update: dict[str, Any] = {"target": new_target, "reasoning": True}
    if instruction_suffix and custom.get("instruction"):
        suffixes = reasoning_templates()["instruction_suffix"][lang]
        suffix = suffixes[int(ctx.draw("reasoning_suffix", cut.id) * len(suffixes))]
        update["instruction"] = custom["instruction"] + ("" if lang == "zh" else " ") + suffix
    cut.custom = {**custom, **update}
    return cut
