"""`quality_filter`: thresholds per measure, a reject code per measure, from the pipeline's YAML.

```yaml
- stage: quality_filter
  keep_measures_only: false      # true: label only (flags), reject nothing
  thresholds:
    snr_db: {min: 15, code: low_snr}
    clipping: {max: 0.001, code: clipped}
```
A cut outside any range is rejected with that measure's code (the first failing measure in the
order written; the detail lists every failing one). With `keep_measures_only` nothing is rejected:
the codes a cut would have got go to `custom.quality_flags`, and both modes count them per code in
the stage's counters (summary.json). A threshold on a measure no stage wrote rejects the cut as
`missing_measure` rather than letting it through unchecked. The entry is validated when the
pipeline loads: an unknown measure, an empty range or min > max is a one-line error naming it.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

from lhotse.cut import Cut
from lhotse.utils import fastcopy
from pydantic import BaseModel, ConfigDict, field_validator

from osum_data.quality.record import measures_of
from osum_data.rejects import Reject
from osum_data.run.stage import StageResult, register_stage, rejecting

# Every measure a quality stage writes, and the stage that writes it.
MEASURES: dict[str, str] = {
    "snr_db": "quality_snr",
    "clipping": "quality_clipping",
    "bandwidth_hz": "quality_bandwidth",
    "bandwidth_ratio": "quality_bandwidth",
    "speech_ratio": "quality_speech_ratio",
    "dnsmos_sig": "quality_dnsmos",
    "dnsmos_bak": "quality_dnsmos",
    "dnsmos_ovrl": "quality_dnsmos",
    "dnsmos_p808": "quality_dnsmos",
    "wer": "quality_asr",
    "cer": "quality_asr",
    "lang_match": "quality_language",
    "lang_prob": "quality_language",
    "repeat_ratio": "quality_text_checks",
    "max_run": "quality_text_checks",
    "units_per_s": "quality_text_checks",
}
_CODE = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


class Threshold(BaseModel):
    """The range a measure must fall in; `code` is the reject code (default `<measure>_low/high`)."""

    model_config = ConfigDict(extra="forbid")
    min: float | None = None
    max: float | None = None
    code: str | None = None

    @field_validator("code")
    @classmethod
    def _code(cls, v: str | None) -> str | None:
        if v is not None and not _CODE.match(v):
            raise ValueError(f"reject code {v!r} must be lower-case letters, digits and _")
        return v


def check_thresholds(params: dict[str, Any]) -> None:
    for name, t in (params.get("thresholds") or {}).items():
        if name not in MEASURES:
            raise ValueError(f"thresholds: unknown measure {name!r} (known: {', '.join(MEASURES)})")
        if t.min is None and t.max is None:
            raise ValueError(f"thresholds.{name}: give min, max or both")
        if t.min is not None and t.max is not None and t.min > t.max:
            raise ValueError(f"thresholds.{name}: min {t.min} > max {t.max}")
    if not params.get("thresholds"):
        raise ValueError("thresholds: none given (a filter with no threshold keeps everything)")


def failures(measures: dict[str, Any], thresholds: dict[str, Threshold]) -> list[tuple[str, str]]:
    """(code, why) for every threshold `measures` misses, in the order thresholds are written."""
    out = []
    for name, t in thresholds.items():
        value = measures.get(name)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            out.append(("missing_measure", f"{name} not measured (add stage {MEASURES[name]!r} before)"))
        elif t.min is not None and value < t.min:
            out.append((t.code or f"{name}_low", f"{name}={value:g} < {t.min:g}"))
        elif t.max is not None and value > t.max:
            out.append((t.code or f"{name}_high", f"{name}={value:g} > {t.max:g}"))
    return out


@register_stage("quality_filter", version=1, check=check_thresholds)
class QualityFilter:
    """Reject (or, with keep_measures_only, flag) cuts whose measures miss their thresholds."""

    def __init__(self, thresholds: dict[str, Threshold], keep_measures_only: bool = False):
        self.thresholds = {k: Threshold.model_validate(v) for k, v in thresholds.items()}
        self.keep_measures_only = keep_measures_only

    def __call__(self, cuts: list[Cut], ctx) -> StageResult:
        result = StageResult()
        codes: Counter = Counter()
        for cut in cuts:
            with rejecting(result, cut):
                failed = failures(measures_of(cut), self.thresholds)
                codes.update(code for code, _ in failed[:1])
                if failed and not self.keep_measures_only:
                    raise Reject(failed[0][0], "; ".join(why for _, why in failed))
                result.kept.append(flagged(cut, [code for code, _ in failed]) if failed else cut)
        result.counters["quality_codes"] = dict(codes)
        return result


def flagged(cut: Cut, codes: list[str]) -> Cut:
    """`cut` with `custom.quality_flags` (where its measures live) listing the codes it missed."""
    if cut.supervisions:
        sup = cut.supervisions[0]
        custom = {**(sup.custom or {}), "quality_flags": codes}
        return fastcopy(cut, supervisions=[fastcopy(sup, custom=custom), *cut.supervisions[1:]])
    return fastcopy(cut, custom={**(cut.custom or {}), "quality_flags": codes})
