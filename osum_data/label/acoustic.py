"""Acoustic attributes per utterance, for LLM-written QA about how something was said (issue #8 item 5).

`acoustic_attributes` measures, on the supervised span of a cut:
- pitch: median F0 of the voiced frames (librosa's pYIN), and a level judged against the speaker's
  gender (bins in acoustic.yaml; LTU-AS also binned pitch by gender);
- speed: units per second of the trimmed utterance (leading and trailing silence removed) -
  characters for Chinese/Japanese/Korean text, an estimate of syllables for Latin script;
- energy: mean power of the non-silent frames in dBFS.
Each goes to supervision.custom with its number (`{"level": "high", "f0_hz": 231.0, ...}`) and
label_source `rule:acoustic`. What cannot be measured is left out rather than guessed: no pitch for
a cut with too few voiced frames (an event clip, a whisper), no speed without a transcript.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from lhotse.cut import Cut
from lhotse.utils import fastcopy

from osum_data.run.stage import per_cut_stage

SAMPLE_RATE = 16000
HOP = 160  # 10 ms frames
SOURCE = "rule:acoustic"
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_VOWEL_GROUPS = re.compile(r"[aeiouy]+")
CJK_LANGUAGES = {"zh", "cmn", "yue", "ja", "ko", "chinese", "mandarin", "cantonese", "japanese", "korean"}


@cache
def levels(path: str | None = None) -> dict[str, Any]:
    with open(path or Path(__file__).with_name("acoustic.yaml"), encoding="utf-8") as f:
        return yaml.safe_load(f)


def level_of(value: float, bins: list[dict[str, Any]]) -> str:
    for entry in bins:
        if entry.get("below") is None or value < entry["below"]:
            return entry["level"]
    raise ValueError(f"no level for {value}: the last bin must have no `below`")


def estimate_syllables(word: str) -> int:
    """Vowel groups in a Latin-script word, less a silent final e; at least one per word."""
    word = unicodedata.normalize("NFKD", word.casefold())
    word = "".join(c for c in word if c.isalpha())
    if not word:
        return 0
    groups = len(_VOWEL_GROUPS.findall(word))
    if word.endswith("e") and not word.endswith(("le", "ee", "ye")) and groups > 1:
        groups -= 1
    return max(groups, 1)


def count_units(text: str, language: str | None = None) -> tuple[int, str]:
    """(count, unit): CJK characters (+ syllables of any Latin words mixed in) or Latin syllables."""
    cjk = len(_CJK.findall(text))
    latin = sum(estimate_syllables(w) for w in re.findall(r"[^\W\d_]+", _CJK.sub(" ", text)))
    digits = len(re.findall(r"\d", text))  # a digit is read as at least one syllable
    is_cjk = cjk > 0 and (cjk >= latin or (language or "").split("-")[0].lower() in CJK_LANGUAGES)
    return cjk + latin + digits, "chars_per_s" if is_cjk else "syllables_per_s"


def measure_f0(samples: np.ndarray, fmin: float, fmax: float, min_voiced_frames: int) -> float | None:
    """Median F0 (Hz) of the voiced frames, or None if fewer than `min_voiced_frames` are voiced."""
    import librosa  # numba-compiled on first use: import only where pitch is measured

    f0, voiced, _ = librosa.pyin(
        samples, fmin=fmin, fmax=fmax, sr=SAMPLE_RATE, frame_length=1024, hop_length=HOP
    )
    values = f0[voiced & np.isfinite(f0)]
    return float(np.median(values)) if values.size >= min_voiced_frames else None


def active_span(samples: np.ndarray, top_db: float) -> tuple[np.ndarray, np.ndarray]:
    """(trimmed samples, non-silent intervals of them) with librosa's energy-based splitter."""
    import librosa

    trimmed, _ = librosa.effects.trim(samples, top_db=top_db, frame_length=400, hop_length=HOP)
    return trimmed, librosa.effects.split(trimmed, top_db=top_db, frame_length=400, hop_length=HOP)


@per_cut_stage("acoustic_attributes")
def acoustic_attributes(
    cut: Cut,
    fmin: float = 60.0,
    fmax: float = 500.0,
    min_voiced_frames: int = 10,
    top_db: float = 35.0,
    levels_file: str | None = None,
) -> Cut:
    """Add custom.pitch / custom.speed / custom.energy to the cut's first supervision."""
    if not cut.supervisions:
        return cut
    bins = levels(levels_file)
    audio = cut.resample(SAMPLE_RATE) if cut.sampling_rate != SAMPLE_RATE else cut
    samples = audio.load_audio()[0].astype(np.float32)
    trimmed, intervals = active_span(samples, top_db)
    sup = cut.supervisions[0]
    custom = dict(sup.custom or {})
    sources = dict(custom.get("label_source", {}))

    voiced_audio = np.concatenate([trimmed[a:b] for a, b in intervals]) if len(intervals) else trimmed
    if voiced_audio.size:
        power = float(np.mean(voiced_audio.astype(np.float64) ** 2))
        dbfs = float(10 * np.log10(max(power, 1e-12)))
        custom["energy"] = {"level": level_of(dbfs, bins["energy"]), "rms_dbfs": round(dbfs, 1)}
        sources["energy"] = SOURCE

    f0 = measure_f0(trimmed, fmin, fmax, min_voiced_frames) if trimmed.size >= 1024 else None
    if f0 is not None:
        reference = sup.gender if sup.gender in bins["pitch"] else "unknown"
        level = level_of(f0, bins["pitch"][reference])
        custom["pitch"] = {"level": level, "f0_hz": round(f0, 1), "reference": reference}
        sources["pitch"] = SOURCE

    seconds = trimmed.size / SAMPLE_RATE
    if sup.text and seconds > 0:
        count, unit = count_units(sup.text, sup.language)
        if count:
            rate = count / seconds
            custom["speed"] = {
                "level": level_of(rate, bins["speed"][unit]),
                "rate": round(rate, 2),
                "unit": unit,
            }
            sources["speed"] = SOURCE

    custom["label_source"] = sources
    return fastcopy(cut, supervisions=[fastcopy(sup, custom=custom), *cut.supervisions[1:]])
