"""The template stage's multi-label keys and label-only (untranscribed) cuts, rendered and parsed back."""

from __future__ import annotations

import pytest
from lhotse import MonoCut, SupervisionSegment

from osum_data.run.config import ConfigError, build_config
from osum_data.run.stage import Reject
from osum_data.tasks import parse_target
from osum_data.template.builder import template


def cut(text: str | None, gender: str | None = None, **custom) -> MonoCut:
    sup = SupervisionSegment(
        id="c", recording_id="r", start=0, duration=1, text=text, gender=gender, custom=custom or None
    )
    return MonoCut(id="c", start=0, duration=1, channel=0, supervisions=[sup])


MULTI = ["ssr_sap_sgc", "sap_sgc"]


@pytest.mark.parametrize(
    ("task", "c", "key", "target"),
    [
        (
            "sgc",
            cut("hello there", "male", age="old"),
            "<TRANSCRIBE> <AGE> <GENDER>",
            "hello there<OLD><MALE>",
        ),
        (
            "sap",
            cut("hello there", "female", age="child"),
            "<TRANSCRIBE> <AGE> <GENDER>",
            "hello there<CHILD><FEMALE>",
        ),
        ("sgc", cut("hello there", "male"), "<TRANSCRIBE> <GENDER>", "hello there<MALE>"),
        ("sap", cut("hello there", None, age="adult"), "<TRANSCRIBE> <AGE>", "hello there<ADULT>"),
        (
            "sgc",
            cut("hello there", "male", age="adult", style="news_science"),
            "<TRANSCRIBE> <STYLE> <AGE> <GENDER>",
            "hello there<新闻科普><ADULT><MALE>",
        ),
        (
            "sgc",
            cut(None, "female", age="adult"),
            "<AGE> <GENDER>",
            "<ADULT><FEMALE>",
        ),  # no transcript: X-only
        ("sgc", cut("", "female"), "<GENDER>", "<FEMALE>"),
        ("ved", cut(None, events=["laugh", "cough"]), "<CAPTION>", "<LAUGH><COUGH>"),
    ],
)
def test_the_first_multi_label_key_whose_labels_are_known_is_used(task, c, key, target):
    out = template(c, task=task, multi_label=MULTI if task in ("sgc", "sap") else [])
    assert (out.custom["task"], out.custom["target"]) == (key, target)
    parsed = parse_target(key, target)
    sup = out.supervisions[0]
    assert parsed.labels.get("gender", sup.gender) == sup.gender
    assert all(parsed.labels[f] == sup.custom[f] for f in parsed.labels if f != "gender")
    if key.startswith("<TRANSCRIBE>"):
        assert parsed.transcript == sup.text
    else:
        assert parsed.transcript is None


def test_x_only_ratio_picks_the_multi_label_x_only_key():
    out = template(cut("hi", "male", age="adult"), task="sgc", multi_label=MULTI, x_only_ratio=1.0)
    assert (out.custom["task"], out.custom["target"]) == ("<AGE> <GENDER>", "<ADULT><MALE>")


def test_an_untranscribed_cut_is_rejected_by_tasks_without_an_x_only_form():
    with pytest.raises(Reject) as info:
        template(cut(None, "male"), task="asr")
    assert info.value.code == "unrenderable_target"
    with pytest.raises(Reject, match="has no gender label"):
        template(cut("hi"), task="sgc", multi_label=MULTI)


def test_a_multi_label_task_must_carry_the_task_labels():
    with pytest.raises(
        ConfigError, match=r"multi_label task 'sap' \(<TRANSCRIBE> <AGE>\) does not carry every label"
    ):
        build_config({"stages": [{"stage": "template", "task": "sgc", "multi_label": ["sap"]}]})
