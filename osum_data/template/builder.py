"""The ASR+X sample builder (the `template` stage): turns a labelled cut into a task sample.

A sample keeps its transcript in `supervisions[0].text` and gains `custom.task` (the exact tag
key), `custom.target` (rendered by the task registry) and `custom.instruction` (drawn from the
prompt pool by a hash of the cut id, so every worker and every re-run draws the same one).
"""

from __future__ import annotations

from typing import Annotated, Literal

from lhotse.cut import Cut
from pydantic import AfterValidator, Field

from osum_data.run.stage import Reject, StageContext, per_cut_stage
from osum_data.seeded import unit_draw
from osum_data.tasks import (
    FormatError,
    LabelError,
    Word,
    draw_instruction,
    prompt_language,
    registry,
    render_target,
)


def _known_task(task: str) -> str:
    if task not in registry().tasks:
        raise ValueError(f"unknown task; known: {', '.join(registry().tasks)}")
    return task


TaskId = Annotated[str, AfterValidator(_known_task)]
PromptLanguage = Literal["zh", "en"]


def labels_of(cut: Cut, fields: tuple[str, ...]) -> dict[str, str | list[str]]:
    sup = cut.supervisions[0]
    custom = sup.custom or {}
    out: dict[str, str | list[str]] = {}
    for f in fields:
        value = sup.gender if f == "gender" else custom.get(f)
        if value in (None, "", []):
            raise Reject("missing_label", f"cut {cut.id} has no {f} label")
        out[f] = value
    return out


def words_of(cut: Cut) -> list[Word]:
    ali = (cut.supervisions[0].alignment or {}).get("word") or []
    return [Word(a.symbol, a.start, a.end) for a in ali]


def _check_multi_label(params: dict) -> None:
    base = registry().task(params["task"])
    for other in params["multi_label"]:
        extra = registry().task(other)
        if extra.format != "labels" or not set(base.labels) <= set(extra.labels):
            raise ValueError(
                f"multi_label task {other!r} ({extra.key}) does not carry every label of task "
                f"{base.id!r} ({', '.join(base.labels) or 'none'})"
            )


def has_labels(cut: Cut, fields: tuple[str, ...]) -> bool:
    try:
        labels_of(cut, fields)
    except Reject:
        return False
    return True


@per_cut_stage("template", version=3, check=_check_multi_label)
def template(
    cut: Cut,
    ctx: StageContext | None = None,
    task: TaskId = "asr",
    x_only_ratio: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0,
    instruction_language: Literal["auto", "zh", "en"] = "auto",
    default_language: PromptLanguage = "en",
    english_tags: bool = False,
    multi_label: list[TaskId] = (),
) -> Cut:
    """Render the target of `task` for this cut; a share `x_only_ratio` of label tasks gets the
    X-only key and target (tags without the transcript). The X-only draw and the instruction are
    fixed by the pipeline seed and the cut id.

    `multi_label` lists tasks tried first, in order (e.g. `[ssr_sap_sgc, sap_sgc]` for SGC): the
    first whose labels are all known on the cut is rendered instead, so a cut with age and gender
    becomes a `<TRANSCRIBE> <AGE> <GENDER>` sample. A cut without a transcript (an event clip,
    VoxCeleb) becomes an X-only sample where the task has that form.
    """
    seed = ctx.seed if ctx is not None else 0  # called directly (not by the runner): seed 0
    if not cut.supervisions:
        raise Reject("no_supervision", f"cut {cut.id} has no supervision")
    spec = registry().task(task)
    for other in multi_label:
        if has_labels(cut, registry().task(other).labels):
            spec = registry().task(other)
            break
    sup = cut.supervisions[0]
    untranscribed = not (sup.text or "").strip()
    if untranscribed and spec.format in ("labels", "chat") and not spec.x_only_key:
        raise Reject("empty_transcript", f"cut {cut.id}: no transcript and task {spec.id} has no X-only form")
    x_only = bool(spec.x_only_key) and (untranscribed or unit_draw(seed, "x_only", cut.id) < x_only_ratio)
    try:
        target = render_target(
            spec.id,
            transcript=sup.text,
            labels=labels_of(cut, spec.labels) if spec.labels else None,
            words=words_of(cut) if spec.format == "timestamps" else None,
            answer=(sup.custom or {}).get("answer"),
            x_only=x_only,
            english_tags=english_tags,
            duration=cut.duration,
        )
    except LabelError as e:
        raise Reject("unknown_label", f"cut {cut.id}: {e}") from None
    except FormatError as e:
        raise Reject("unrenderable_target", f"cut {cut.id}: {e}") from None
    key = spec.x_only_key if x_only else spec.key
    lang = (
        prompt_language(sup.language, default_language)
        if instruction_language == "auto"
        else instruction_language
    )
    cut.custom = {
        **(cut.custom or {}),
        "task": key,
        "target": target,
        "instruction": draw_instruction(key, lang, cut.id, seed),
    }
    return cut
