"""A stage that only takes time, so kill/resume tests can stop a run mid-way reliably.

Loaded through a pipeline's `imports: [stages_for_tests]`; tests put this folder on PYTHONPATH so
Ray workers can import it too.
"""

from __future__ import annotations

import os
import time

from lhotse.cut import Cut

from osum_data.run.stage import StageResult, per_cut_stage, register_stage


@per_cut_stage("sleep_per_cut")
def sleep_per_cut(cut: Cut, seconds: float = 0.01) -> Cut:
    time.sleep(seconds)
    return cut


@register_stage("count_loads")
class CountLoads:
    """Stands in for a model stage: appends its process id to `log` each time it is built."""

    def __init__(self, log: str):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")

    def __call__(self, cuts: list[Cut]) -> StageResult:
        return StageResult(kept=list(cuts))
