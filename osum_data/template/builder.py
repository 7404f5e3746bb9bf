"""The ASR+X sample builder (the `template` stage): turns a labelled cut into a task sample.

A sample keeps its transcript in `supervisions[0].text` and gains `custom.task` (the exact tag
key), `custom.target` (rendered by the task registry) and `custom.instruction` (drawn from the
prompt pool by a hash of the cut id, so every worker and every re-run draws the same one).
"""

from __future__ import annotations

import hashlib

from lhotse.cut import Cut

from osum_data.run.stage import Reject, per_cut_stage
from osum_data.tasks import (
    FormatError,
    LabelError,
    Word,
    draw_instruction,
    prompt_language,
    registry,
    render_target,
)


def unit_draw(seed: int, salt: str, cut_id: str) -> float:
    """A number in [0, 1) fixed by (seed, salt, cut id): deterministic 'randomness' per cut."""
    digest = hashlib.sha256(f"{seed}\x00{salt}\x00{cut_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


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


@per_cut_stage("template")
def template(
    cut: Cut,
    task: str = "asr",
    x_only_ratio: float = 0.0,
    seed: int = 0,
    instruction_language: str = "auto",
    default_language: str = "en",
    english_tags: bool = False,
) -> Cut:
    """Render the target of `task` for this cut; a share `x_only_ratio` of label tasks gets the
    X-only key and target (tags without the transcript)."""
    spec = registry().task(task)
    if not 0.0 <= x_only_ratio <= 1.0:
        raise ValueError(f"x_only_ratio must be within [0, 1], got {x_only_ratio}")
    if not cut.supervisions:
        raise Reject("no_supervision", f"cut {cut.id} has no supervision")
    sup = cut.supervisions[0]
    x_only = bool(spec.x_only_key) and unit_draw(seed, "x_only", cut.id) < x_only_ratio
    try:
        target = render_target(
            task,
            transcript=sup.text,
            labels=labels_of(cut, spec.labels) if spec.labels else None,
            words=words_of(cut) if spec.format == "timestamps" else None,
            answer=(sup.custom or {}).get("answer"),
            x_only=x_only,
            english_tags=english_tags,
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
