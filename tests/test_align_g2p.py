"""espeak-ng pronunciations in PocketSphinx's phones: the YAML table covers what espeak-ng says
and names only phones the acoustic model has; guesses agree with the CMU dictionary closely."""

from __future__ import annotations

from pathlib import Path

import jiwer
import numpy as np
import pytest

from osum_data.label.align.g2p import EspeakG2P, ipa_table
from osum_data.label.align.sphinx import shipped_model


@pytest.fixture(scope="module")
def cmudict() -> dict[str, list[str]]:
    """First pronunciation of every word in the shipped dictionary."""
    words = {}
    for line in Path(shipped_model()[1]).read_text().splitlines():
        word, *phones = line.split()
        if "(" not in word:
            words[word] = phones
    return words


def test_the_table_names_only_phones_of_the_acoustic_model(cmudict):
    model_phones = {p for phones in cmudict.values() for p in phones}
    _, table = ipa_table()
    assert {p for phones in table.values() for p in phones} <= model_phones


def test_guesses_agree_with_the_dictionary_on_a_spread_of_its_words(cmudict):
    g2p = EspeakG2P()
    sample = list(cmudict)[::900]  # ~150 words across the alphabet, names and rare words included
    rates = []
    for word in sample:
        phones, why = g2p.pronounce(word)
        assert phones is not None, f"{word}: {why}"
        rates.append(jiwer.wer(" ".join(cmudict[word]), " ".join(phones)))
    assert np.mean(rates) <= 0.2  # measured 0.12 on 467 words
    assert np.mean([r == 0 for r in rates]) >= 0.4  # measured 0.54 exactly right


def test_words_outside_the_dictionary_and_unknown_phonemes(monkeypatch):
    g2p = EspeakG2P()
    assert g2p.pronounce("unmute") == (("AH", "N", "M", "Y", "UW", "T"), "")
    assert g2p.pronounce("3d")[0] == ("TH", "R", "IY", "D", "IY")  # a symbol is read out
    monkeypatch.setattr(g2p, "table", {k: v for k, v in g2p.table.items() if k != "ʌ"})
    g2p._cache.clear()
    phones, why = g2p.pronounce("unmute")
    assert phones is None and "ʌ" in why and "ipa_arpabet.yaml" in why
