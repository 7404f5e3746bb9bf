"""Task registry: every target format round-trips, label maps fail loudly, prompt pools validate."""

from __future__ import annotations

import copy

import pytest

from osum_data.tasks import (
    FormatError,
    LabelError,
    Word,
    draw_instruction,
    parse_target,
    prompt_pool,
    registry,
    render_target,
)
from osum_data.tasks.prompts import MIN_PER_KEY, PromptPoolError, validate_pool

DESIGN_KEYS = {
    "<TRANSCRIBE>",
    "<TRANSCRIBE> <ALIGN>",
    "<TRANSCRIBE> <CAPTION>",
    "<CAPTION>",
    "<TRANSCRIBE> <EMOTION>",
    "<EMOTION>",
    "<TRANSCRIBE> <STYLE>",
    "<STYLE>",
    "<TRANSCRIBE> <GENDER>",
    "<GENDER>",
    "<TRANSCRIBE> <AGE>",
    "<AGE>",
    "<TRANSCRIBE> <S2TCHAT>",
    "<S2TCHAT>",
    "<TRANSCRIBE> <AGE> <GENDER>",
    "<AGE> <GENDER>",
    "<TRANSCRIBE> <STYLE> <AGE> <GENDER>",
    "<STYLE> <AGE> <GENDER>",
}


# LTU-style QA (beyond OSUM): each sample brings its own instruction (the question), so no prompt pool.
QA_KEYS = {"<QA_CLOSED>", "<QA_OPEN>"}


def test_registry_has_exactly_the_design_keys_plus_qa():
    assert set(registry().all_keys) == DESIGN_KEYS | QA_KEYS
    assert len(registry().all_keys) == len(DESIGN_KEYS) + len(QA_KEYS)
    assert set(registry().pool_keys) == DESIGN_KEYS


def test_design_examples_render_exactly():
    assert (
        render_target("ser", transcript="今天天气不错", labels={"emotion": "happy"}) == "今天天气不错<HAPPY>"
    )
    words = [Word("hello", 0.0, 0.43), Word("world", 0.5, 0.91)]
    assert render_target("srwt", words=words) == "<0.0>hello<0.4> <0.5>world<0.9>"
    assert render_target("sttc", transcript="几点了", answer="三点") == "几点了<开始回答>三点"
    assert render_target("sttc", transcript="几点了", answer="三点", x_only=True) == "三点"
    assert render_target("ved", transcript="x", labels={"events": ["throat_clearing"]}, x_only=True) == (
        "<THROAT_CLEARING>"
    )
    assert render_target("ssr", transcript="从前", labels={"style": "fairy_tale"}) == "从前<童话故事>"
    assert render_target("ssr", transcript="x", labels={"style": "fairy_tale"}, english_tags=True) == (
        "x<FAIRY_TALE>"
    )


SAMPLES = [
    ("asr", dict(transcript="hello world")),
    ("srwt", dict(words=[Word("你", 0.0, 0.2), Word("好", 0.2, 0.5)])),
    ("ved", dict(transcript="oh no", labels={"events": ["cough", "laugh"]})),
    ("ser", dict(transcript="great news", labels={"emotion": "surprise"})),
    ("ssr", dict(transcript="once upon a time", labels={"style": "fairy_tale"})),
    ("sgc", dict(transcript="hi", labels={"gender": "female"})),
    ("sap", dict(transcript="hi", labels={"age": "old"})),
    ("sttc", dict(transcript="what time is it", answer="It is three o'clock.")),
    ("qa_closed", dict(answer="The speaker is female.")),
    ("qa_open", dict(answer="She asks about the weather, and sounds cheerful.")),
    ("sap_sgc", dict(transcript="hi", labels={"age": "child", "gender": "male"})),
    (
        "ssr_sap_sgc",
        dict(transcript="hi", labels={"style": "news_science", "age": "adult", "gender": "male"}),
    ),
]


@pytest.mark.parametrize("task_id,fields", SAMPLES, ids=[s[0] for s in SAMPLES])
@pytest.mark.parametrize("x_only", [False, True])
def test_render_parse_round_trip(task_id, fields, x_only):
    task = registry().task(task_id)
    if x_only and not task.x_only_key:
        with pytest.raises(FormatError):
            render_target(task_id, x_only=True, **fields)
        return
    key = task.x_only_key if x_only else task.key
    text = render_target(task_id, x_only=x_only, **fields)
    parsed = parse_target(key, text)
    if "labels" in fields:
        assert parsed.labels == fields["labels"]
    if "answer" in fields:
        assert parsed.answer == fields["answer"]
    if "words" in fields:
        assert [(w.text, w.start, w.end) for w in parsed.words] == [
            (w.text, w.start, w.end) for w in fields["words"]
        ]
    if "transcript" in fields:
        assert parsed.transcript == (None if x_only and task.format != "transcript" else fields["transcript"])
    # OSUM lowercases English targets: tags must still parse.
    if task.format == "labels":
        assert parse_target(key, text.lower()).labels == parse_target(key, text).labels


def test_render_refuses_what_no_parser_could_split():
    with pytest.raises(FormatError, match="'<' or '>'"):
        render_target("asr", transcript="a <b> c")
    with pytest.raises(FormatError, match="answer"):
        render_target("sttc", transcript="q", answer="use <tags>")
    with pytest.raises(FormatError, match="missing"):
        render_target("sgc", transcript="hi", labels={})
    with pytest.raises(LabelError, match="'cheerful'"):
        render_target("ser", transcript="hi", labels={"emotion": "cheerful"})


def test_parse_rejects_malformed_targets():
    with pytest.raises(FormatError):
        parse_target("<TRANSCRIBE> <EMOTION>", "no tags here")
    with pytest.raises(FormatError):
        parse_target("<EMOTION>", "text before<HAPPY>")
    with pytest.raises(FormatError):
        parse_target("<TRANSCRIBE> <AGE> <GENDER>", "hi<ADULT>")
    with pytest.raises(LabelError):
        parse_target("<TRANSCRIBE> <GENDER>", "hi<HAPPY>")
    with pytest.raises(FormatError):
        parse_target("<TRANSCRIBE> <ALIGN>", "<0.0>a<0.2> stray")
    with pytest.raises(FormatError):
        parse_target("<TRANSCRIBE> <S2TCHAT>", "no separator")


def test_corpus_label_maps_are_data_and_fail_loudly():
    reg = registry()
    assert reg.map_label("emotion", "exc", "iemocap") == "happy"
    assert reg.map_label("age", "fourties", "commonvoice") == "adult"
    assert reg.map_label("gender", "F") == "female"
    with pytest.raises(LabelError, match="'frustrated'"):
        reg.map_label("emotion", "frustrated", "iemocap")
    assert [reg.age_bucket(a) for a in (6, 14, 15, 59, 60, 90)] == [
        "child",
        "child",
        "adult",
        "adult",
        "old",
        "old",
    ]


def test_prompt_pools_are_complete_and_valid():
    for lang in ("zh", "en"):
        pool = prompt_pool(lang)
        assert set(pool) == DESIGN_KEYS | QA_KEYS
        assert all(len(pool[k]) >= MIN_PER_KEY for k in DESIGN_KEYS)
        assert all(pool[k] == () for k in QA_KEYS)  # questions are per sample
        with pytest.raises(PromptPoolError, match="bring their own instruction"):
            draw_instruction("<QA_OPEN>", lang, "cut1")
    zh = prompt_pool("zh")["<TRANSCRIBE>"]
    assert any("\u4e00" <= ch <= "\u9fff" for ch in zh[0])


def test_prompt_validation_catches_each_rule():
    import yaml

    from osum_data.tasks.prompts import PROMPT_DIR

    good = yaml.safe_load((PROMPT_DIR / "en.yaml").read_text())
    validate_pool("en", good)
    bad = copy.deepcopy(good)
    del bad["<AGE>"]
    with pytest.raises(PromptPoolError, match="keys without a pool"):
        validate_pool("en", bad)
    bad = copy.deepcopy(good)
    bad["<EMOTION>"].append(bad["<TRANSCRIBE>"][0].upper())
    with pytest.raises(PromptPoolError, match="duplicate"):
        validate_pool("en", bad)
    bad = copy.deepcopy(good)
    bad["<EMOTION>"].append("Does the speaker sound angry to you?")
    with pytest.raises(PromptPoolError, match="emotion:angry"):
        validate_pool("en", bad)
    bad = copy.deepcopy(good)
    bad["<GENDER>"] = bad["<GENDER>"][:10]
    with pytest.raises(PromptPoolError, match="need >="):
        validate_pool("en", bad)
    bad = copy.deepcopy(good)
    bad["<QA_OPEN>"] = list(bad["<GENDER>"])
    with pytest.raises(PromptPoolError, match="take no pool"):
        validate_pool("en", bad)
    # issue 16: the demo's "...then on separate lines give the speaker's age group and gender" over an
    # inline `text<ADULT><FEMALE>` target
    bad = copy.deepcopy(good)
    bad["<TRANSCRIBE> <AGE> <GENDER>"].append(
        "Write the transcript of the clip, then on separate lines give the speaker's age group and gender."
    )
    with pytest.raises(PromptPoolError, match=r"<TRANSCRIBE> <AGE> <GENDER>: line_break.*'separate lines'"):
        validate_pool("en", bad)
    bad = yaml.safe_load((PROMPT_DIR / "zh.yaml").read_text())
    bad["<TRANSCRIBE> <EMOTION>"].append("请先转写这段音频，然后另起一行给出说话人的情感。")
    with pytest.raises(PromptPoolError, match="另起一行"):
        validate_pool("zh", bad)


def test_instruction_agrees_with_the_layout_of_its_key():
    from osum_data.tasks import instruction_agrees

    # every shipped pool entry agrees (they are checked on load; this pins that none slipped through)
    for lang in ("en", "zh"):
        for key, items in prompt_pool(lang).items():
            assert all(instruction_agrees(key, t) is None for t in items), key
    assert (
        instruction_agrees("<TRANSCRIBE> <GENDER>", "Transcribe it, then give the gender right after.")
        is None
    )
    reason = instruction_agrees(
        "<TRANSCRIBE> <GENDER>", "Transcribe it. Then, on a new line, give the gender."
    )
    assert reason and reason.startswith("line_break") and "'new line'" in reason
    assert "换行" in instruction_agrees("<TRANSCRIBE> <S2TCHAT>", "先转写，换行后再回答。")
    # the label alone under a key whose target starts with the transcript, and the reverse
    assert instruction_agrees("<TRANSCRIBE> <EMOTION>", "Name the emotion only; no need to transcribe.")
    assert instruction_agrees("<EMOTION>", "Name the emotion only; no need to transcribe.") is None
    assert instruction_agrees("<TRANSCRIBE> <ALIGN>", "Output only the transcription.").startswith(
        "transcript_only"
    )
    assert instruction_agrees("<TRANSCRIBE>", "Output only the transcription.") is None
    with pytest.raises(KeyError):
        instruction_agrees("<NOT_A_KEY>", "Transcribe.")


def test_instruction_draw_is_deterministic_and_spread():
    draws = [draw_instruction("<TRANSCRIBE>", "en", f"cut{i}") for i in range(200)]
    assert draws == [draw_instruction("<TRANSCRIBE>", "en", f"cut{i}") for i in range(200)]
    assert len(set(draws)) > 30
    assert draw_instruction("<TRANSCRIBE>", "en", "cut1", seed=1) in prompt_pool("en")["<TRANSCRIBE>"]


def test_instruction_draw_keeps_its_numbers_on_the_one_seeded_draw():
    """draw_instruction now goes through osum_data.seeded.seed_bits; the prompts a cut gets are the
    ones the earlier hand-written sha256 draw gave (values recorded from that code), so rebuilt
    samples do not change."""
    assert [draw_instruction("<TRANSCRIBE>", "en", f"cut{i}", seed=3) for i in range(3)] == [
        "Please jot down everything the speaker says in this clip.",
        "What is the speaker saying? Transcribe it precisely.",
        "Transcribe this audio clip word for word.",
    ]
