"""Duration and speaking-rate filters: cheap guards against misaligned or truncated transcripts."""

from __future__ import annotations

from typing import Annotated, Literal

from lhotse.cut import Cut
from pydantic import Field

from osum_data.run.stage import Reject, per_cut_stage

NonNegative = Annotated[float, Field(ge=0)]


def _min_below_max(lo: str, hi: str):
    def check(params: dict) -> None:
        if params[lo] > params[hi]:
            raise ValueError(f"{lo} {params[lo]} is above {hi} {params[hi]}")

    return check


@per_cut_stage("filter_duration", check=_min_below_max("min_duration", "max_duration"))
def filter_duration(cut: Cut, min_duration: NonNegative = 0.3, max_duration: NonNegative = 30.0) -> Cut:
    if cut.duration < min_duration:
        raise Reject("too_short", f"{cut.duration:.2f} s < {min_duration} s")
    if cut.duration > max_duration:
        raise Reject("too_long", f"{cut.duration:.2f} s > {max_duration} s")
    return cut


def chars_per_second(cut: Cut) -> float:
    chars = sum(len("".join(s.text.split())) for s in cut.supervisions if s.text)
    return chars / cut.duration if cut.duration > 0 else float("inf")


@per_cut_stage("filter_cps", check=_min_below_max("min_cps", "max_cps"))
def filter_cps(
    cut: Cut,
    min_cps: NonNegative = 1.0,
    max_cps: NonNegative = 30.0,
    untranscribed: Literal["reject", "keep"] = "reject",
) -> Cut:
    """Characters (without spaces) per second of audio. Far too many means the transcript covers
    more than the audio; far too few means the audio holds speech the transcript lacks.
    `untranscribed: keep` passes cuts without any transcript (label-only clips) unchecked."""
    if untranscribed == "keep" and not any((s.text or "").strip() for s in cut.supervisions):
        return cut
    cps = chars_per_second(cut)
    if cps < min_cps:
        raise Reject("too_few_chars_per_second", f"{cps:.1f} chars/s < {min_cps}")
    if cps > max_cps:
        raise Reject("too_many_chars_per_second", f"{cps:.1f} chars/s > {max_cps}")
    return cut
