"""Pronunciations guessed by espeak-ng for words that PocketSphinx's dictionary lacks.

PocketSphinx aligns only words its dictionary spells, and real transcripts hold product names,
coinages and typos (`unmute`, `pbx`, `represenatives`): 7% of the demo prompts were rejected for
one such word. espeak-ng's letter-to-sound rules pronounce any spelling; `ipa_arpabet.yaml` maps
its IPA to the acoustic model's ARPAbet. Guessed words align about as well as dictionary words
(tested on real speech), and the cuts that hold one say so, so they can be filtered.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

import yaml

TABLE = Path(__file__).with_name("ipa_arpabet.yaml")
_MARKS = str.maketrans("", "", "ˈˌ\u0329\u032f")  # stress, syllabic and non-syllabic marks


@functools.cache
def ipa_table() -> tuple[str, dict[str, tuple[str, ...]]]:
    """(espeak-ng voice, IPA unit -> ARPAbet phones) from the YAML table."""
    data = yaml.safe_load(TABLE.read_text(encoding="utf-8"))
    return data["voice"], {str(k): tuple(str(v).split()) for k, v in data["phones"].items()}


class EspeakG2P:
    """ARPAbet pronunciation of a word, or the reason there is none. Answers are cached: one
    espeak-ng process per distinct word per worker."""

    def __init__(self, binary: str = "espeak-ng"):
        self.binary = shutil.which(binary)
        self.voice, self.table = ipa_table()
        self._cache: dict[str, tuple[tuple[str, ...] | None, str]] = {}

    def ipa_units(self, word: str) -> list[str]:
        """espeak-ng's phoneme units for the word, stress marks removed."""
        proc = subprocess.run(
            [self.binary or "espeak-ng", "-q", "-v", self.voice, "--ipa", "--sep=_", "--stdin"],
            input=word,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        text = proc.stdout.translate(_MARKS)
        return [unit for unit in text.replace(" ", "_").replace("\n", "_").split("_") if unit]

    def pronounce(self, word: str) -> tuple[tuple[str, ...] | None, str]:
        """(phones, "") or (None, why not)."""
        if word not in self._cache:
            self._cache[word] = self._guess(word)
        return self._cache[word]

    def _guess(self, word: str) -> tuple[tuple[str, ...] | None, str]:
        if self.binary is None:
            return None, "espeak-ng is not installed to guess it"
        try:
            units = self.ipa_units(word)
        except (subprocess.SubprocessError, OSError) as exc:
            return None, f"espeak-ng failed: {exc}"
        unknown = sorted({unit for unit in units if unit not in self.table})
        if unknown:
            return None, f"espeak-ng phonemes {' '.join(unknown)} are not in {TABLE.name}"
        if not units:
            return None, "espeak-ng gives it no phonemes"
        return tuple(phone for unit in units for phone in self.table[unit]), ""
