"""A stage that only takes time, so kill/resume tests can stop a run mid-way reliably.

Loaded through a pipeline's `imports: [stages_for_tests]`; tests put this folder on PYTHONPATH so
Ray workers can import it too.
"""

from __future__ import annotations

import time

from lhotse.cut import Cut

from osum_data.run.stage import per_cut_stage


@per_cut_stage("sleep_per_cut")
def sleep_per_cut(cut: Cut, seconds: float = 0.01) -> Cut:
    time.sleep(seconds)
    return cut
