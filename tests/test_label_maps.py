"""Corpus label maps (tasks/corpus_maps.yaml): every native label of every corpus maps or is explicit."""

from __future__ import annotations

import pytest

from osum_data.corpora.labels import SupervisionLabels
from osum_data.corpora.rows import conventions
from osum_data.rejects import Reject
from osum_data.tasks.registry import DATA_DIR, LabelError, NoLabel, Vocabulary, _map_target, registry

# The complete native label sets, as the corpora document them.
NATIVE = {
    ("emotion", "iemocap"): ["neu", "hap", "exc", "sad", "ang", "fru", "sur", "fea", "dis", "oth", "xxx"],
    ("emotion", "meld"): ["neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust"],
    ("emotion", "esd"): [
        "Angry",
        "Happy",
        "Neutral",
        "Sad",
        "Surprise",
        "中立",
        "开心",
        "伤心",
        "生气",
        "惊讶",
    ],
    ("emotion", "cremad"): ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"],
    ("emotion", "ravdess"): list(conventions("ravdess")["emotion"].values()),
    ("events", "vocalsound"): ["laughter", "sigh", "cough", "throatclearing", "sneeze", "sniff"],
    ("events", "nonspeech7k"): ["breath", "cough", "crying", "laugh", "screaming", "sneeze", "yawn"],
    ("gender", "voxceleb"): ["m", "f"],
    ("gender", "cremad"): ["Male", "Female"],
}


@pytest.mark.parametrize(("field", "corpus"), sorted(NATIVE))
def test_every_native_label_is_mapped_or_explicitly_unlabelled(field: str, corpus: str) -> None:
    vocab = registry().vocabulary(field).labels
    for value in NATIVE[(field, corpus)]:
        found = registry().lookup(field, value, corpus)
        assert isinstance(found, NoLabel) or found in vocab, (corpus, value)


def test_esc50_lists_all_fifty_classes() -> None:
    table = registry().corpus_maps["events"]["esc50"]
    assert len(table) == 50
    kept = {k: v for k, v in table.items() if not isinstance(v, NoLabel)}
    assert kept == {
        "crying_baby": "cry",
        "sneezing": "sneeze",
        "coughing": "cough",
        "laughing": "laugh",
        "breathing": "other",
        "snoring": "other",
    }


def test_deliberate_non_labels_keep_or_drop_with_reason() -> None:
    xxx = registry().lookup("emotion", "xxx", "iemocap")
    assert isinstance(xxx, NoLabel) and xxx.keep and "majority" in xxx.reason
    dog = registry().lookup("events", "dog", "esc50")
    assert isinstance(dog, NoLabel) and not dog.keep
    music = registry().lookup("events", "Music", "audioset")  # any unlisted AudioSet class: the `*` entry
    assert isinstance(music, NoLabel) and not music.keep
    with pytest.raises(LabelError, match="'xxx' of corpus 'iemocap' maps to no label"):
        registry().map_label("emotion", "xxx", "iemocap")
    with pytest.raises(LabelError, match=r"unknown events label 'Music' \(corpus map 'esc50'\)"):
        registry().lookup("events", "Music", "esc50")  # no wildcard outside audioset


def test_unknown_value_names_corpus_value_and_file() -> None:
    labels = SupervisionLabels("meld", where="MELD.Raw/train_sent_emo.csv:7")
    with pytest.raises(Reject) as err:
        labels.set_category("emotion", "contempt")
    assert err.value.code == "unknown_label"
    assert "'contempt'" in err.value.detail and "'meld'" in err.value.detail
    assert "MELD.Raw/train_sent_emo.csv:7" in err.value.detail


def test_events_keep_labelled_values_and_drop_clips_without_any() -> None:
    labels = SupervisionLabels("audioset", where="x.csv:2")
    labels.set_events(["speech", "cough", "cough", "music"])
    assert labels.custom["events"] == ["cough"] and labels.custom["events_raw"] == [
        "speech",
        "cough",
        "cough",
        "music",
    ]
    with pytest.raises(Reject) as err:
        SupervisionLabels("audioset", where="x.csv:3").set_events(["speech", "music"])
    assert (
        err.value.code == "no_label"
        and "'speech', 'music'" in err.value.detail
        and "x.csv:3" in err.value.detail
    )


def test_age_buckets_can_be_overridden() -> None:
    assert registry().age_bucket(16) == "adult"
    assert registry().age_bucket(16, buckets=(("child", 17), ("adult", 64), ("old", None))) == "child"
    with pytest.raises(LabelError, match="not an age label"):
        registry().age_bucket(30, buckets=(("teen", 19), ("old", None)))


def test_map_entries_are_validated() -> None:
    vocab = Vocabulary("emotion", registry().vocabulary("emotion").labels)
    with pytest.raises(ValueError, match="lower case"):
        _map_target("emotion", "x", "Neu", "neutral", vocab)
    with pytest.raises(ValueError, match="keep: reason"):
        _map_target("emotion", "x", "neu", {"skip": "why"}, vocab)
    with pytest.raises(ValueError, match="unknown 'calm'"):
        _map_target("emotion", "x", "neu", "calm", vocab)
    assert (DATA_DIR / "corpus_maps.yaml").is_file()


def test_a_repeated_key_in_a_label_table_is_refused(tmp_path, monkeypatch) -> None:
    """The label tables go through the one YAML loader: a corpus spelling written twice (the second
    silently replacing the first) names the file and the key instead."""
    import sys

    from osum_data.yaml_config import ConfigError

    (tmp_path / "corpus_maps.yaml").write_text("emotion:\n  meld:\n    joy: happy\n    joy: sad\n")
    reg_module = sys.modules["osum_data.tasks.registry"]  # the package re-exports a registry()
    monkeypatch.setattr(reg_module, "DATA_DIR", tmp_path)
    with pytest.raises(ConfigError, match=r"corpus_maps\.yaml.*'joy'"):
        reg_module._load_yaml("corpus_maps.yaml")
