"""`quality_language`: is the transcript in the language the corpus declares?

The rules are those of `osum_data.llm.language` (writing system first, then the bundled py3langid
model, confident guesses only), so a cut and an LLM answer are judged alike. Writes
`quality.lang_match` (1 when nothing contradicts the declared language, 0 when the script or a
confident language id does) and `quality.lang_prob` (py3langid's probability of the declared
language, for ranking; short texts score low without being wrong, so filter on lang_match).
"""

from __future__ import annotations

from lhotse.cut import Cut
from lhotse.utils import fastcopy

from osum_data.llm.language import _identifier, detect_language, language_mismatch, normalize_code
from osum_data.quality.record import set_measures
from osum_data.run.stage import per_cut_stage

SOURCE = "model:py3langid+script"


@per_cut_stage("quality_language", version=1)
def quality_language(cut: Cut, default_language: str | None = None) -> Cut:
    """Add `quality.lang_match` and `quality.lang_prob` for the first supervision's transcript
    against its `language` (or `default_language`); cuts without either are left unmeasured."""
    sup = cut.supervisions[0] if cut.supervisions else None
    declared = normalize_code((sup.language if sup else None) or default_language)
    if sup is None or not sup.text or declared is None:
        return cut
    mismatch = language_mismatch(sup.text, declared)
    probs = dict(_identifier().rank(sup.text))
    out = set_measures(
        cut,
        {"lang_match": 0.0 if mismatch else 1.0, "lang_prob": round(float(probs.get(declared, 0.0)), 4)},
        SOURCE,
    )
    detected = detect_language(sup.text)
    if detected or mismatch:
        first = out.supervisions[0]
        custom = {**first.custom, "language_detected": detected, "language_mismatch": mismatch}
        out = fastcopy(out, supervisions=[fastcopy(first, custom=custom), *out.supervisions[1:]])
    return out
