"""`quality_text_checks`: transcripts that cannot be what was said (hallucination checks, as in
NeMo speech-data-processor's filters for ASR pseudo-labels).

- `repeat_ratio`: the share of word 3-grams that repeat an earlier 3-gram of the same text ("thank
  you thank you thank you ..."; a looping decoder). 0 for text without repeats.
- `max_run`: the longest run of one word n-gram repeated back to back (n from 1 to 16: a looping
  decoder repeats a word, a phrase or a whole sentence).
- `units_per_s`: syllables (Latin script) or characters (CJK) per second of audio, counted as
  `acoustic_attributes` counts them; a transcript far longer than the audio allows is read faster
  than anyone speaks (conversational speech is 3-7 syllables per second).
"""

from __future__ import annotations

from lhotse.cut import Cut

from osum_data.label.acoustic import count_units
from osum_data.quality.duplicates import normalise_text
from osum_data.quality.record import set_measures
from osum_data.run.stage import per_cut_stage

SOURCE = "rule:text_checks"


def repeat_ratio(words: list[str], n: int = 3) -> float:
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    repeats = 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / len(grams)


def max_run(words: list[str], longest_n: int = 16) -> int:
    """Longest back-to-back repetition count of any n-gram, n = 1..longest_n (1: no repeat)."""
    best = 1
    for n in range(1, min(longest_n, len(words) // 2) + 1):
        for start in range(n):
            run, prev = 1, None
            for i in range(start, len(words) - n + 1, n):
                gram = tuple(words[i : i + n])
                run = run + 1 if gram == prev else 1
                prev = gram
                best = max(best, run)
    return best


@per_cut_stage("quality_text_checks", version=2)
def quality_text_checks(cut: Cut) -> Cut:
    """Add `quality.repeat_ratio`, `quality.max_run` and `quality.units_per_s` for the transcript."""
    sup = cut.supervisions[0] if cut.supervisions else None
    if sup is None or not sup.text:
        return cut
    words = normalise_text(sup.text).split()
    count, _ = count_units(sup.text, sup.language)
    seconds = sup.duration or cut.duration
    values = {
        "repeat_ratio": round(repeat_ratio(words), 4),
        "max_run": float(max_run(words)),
        "units_per_s": round(count / seconds, 3) if seconds > 0 else float("inf"),
    }
    return set_measures(cut, values, SOURCE)
