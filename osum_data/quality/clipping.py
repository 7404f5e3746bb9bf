"""`quality_clipping`: the share of samples stuck at the clip's peak.

A clipped waveform sits on its ceiling for runs of consecutive samples, at full scale or at
whatever level a later gain left it; clean speech touches its peak in single samples. So the
measure counts samples within 0.1 % of the peak absolute value that have a neighbour also there,
which catches clipping below full scale too (a clipped clip normalised afterwards).
"""

from __future__ import annotations

import numpy as np
from lhotse.cut import Cut

from osum_data.quality.record import mono, set_measures
from osum_data.run.stage import per_cut_stage

SOURCE = "rule:peak_runs"


def clipping_ratio(samples: np.ndarray, tolerance: float = 1e-3) -> float:
    """Fraction of samples on a run (>= 2) at the peak level; 0 for silence."""
    a = np.abs(samples.astype(np.float64))
    peak = a.max() if a.size else 0.0
    if peak <= 0:
        return 0.0
    at_peak = a >= peak * (1 - tolerance)
    neighbour = np.zeros_like(at_peak)
    neighbour[1:] |= at_peak[:-1]
    neighbour[:-1] |= at_peak[1:]
    return float(np.count_nonzero(at_peak & neighbour) / a.size)


@per_cut_stage("quality_clipping", version=1)
def quality_clipping(cut: Cut) -> Cut:
    """Add `custom.quality.clipping` (share of samples on a run at the peak, native rate)."""
    return set_measures(cut, {"clipping": round(clipping_ratio(mono(cut, None)), 6)}, SOURCE)
