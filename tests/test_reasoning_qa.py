"""Label chain-of-thought targets (render + parse round trip, the add_reasoning stage), closed-ended QA
from metadata, the SSR decision with priors, and LLM stages called directly (no Ray) against the
fault-injecting server."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from lhotse import MonoCut, SupervisionSegment
from llm_data_helpers import scripted_reply
from llm_fault_server import FaultServer
from llm_helpers import fast_settings, llm_env  # noqa: F401

from osum_data.label.chat import LLMAnswer
from osum_data.label.style import LLMStyle, decide
from osum_data.run.stage import StageContext
from osum_data.tasks import FormatError, insert_reasoning, parse_target, registry, render_target
from osum_data.template.builder import template
from osum_data.template.qa import qa_closed
from osum_data.template.reasoning import add_reasoning

REASONING = "I hear a fast pace and high pitch, so this is a cheerful tone."
SAMPLES = [
    ("ved", dict(transcript="oh no", labels={"events": ["cough", "laugh"]})),
    ("ser", dict(transcript="great news", labels={"emotion": "surprise"})),
    ("ssr", dict(transcript="从前有座山", labels={"style": "fairy_tale"})),
    ("sgc", dict(transcript="hi", labels={"gender": "female"})),
    ("sap", dict(transcript="hi", labels={"age": "old"})),
    ("sap_sgc", dict(transcript="hi", labels={"age": "child", "gender": "male"})),
    (
        "ssr_sap_sgc",
        dict(transcript="hi", labels={"style": "news_science", "age": "adult", "gender": "male"}),
    ),
    ("sttc", dict(transcript="what time is it", answer="It is three o'clock.")),
    ("qa_closed", dict(answer="The speaker is female.")),
    ("qa_open", dict(answer="She asks about the weather.")),
]


@pytest.mark.parametrize("task_id,fields", SAMPLES, ids=[s[0] for s in SAMPLES])
@pytest.mark.parametrize("x_only", [False, True])
def test_reasoning_targets_round_trip(task_id, fields, x_only):
    task = registry().task(task_id)
    if x_only and not task.x_only_key:
        return
    key = task.x_only_key if x_only else task.key
    plain = render_target(task_id, x_only=x_only, **fields)
    text = render_target(task_id, x_only=x_only, reasoning=REASONING, **fields)
    assert "<think>" + REASONING + "</think>" in text
    assert insert_reasoning(key, plain, REASONING) == text  # the stage's insertion = the renderer's
    parsed, before = parse_target(key, text), parse_target(key, plain)
    assert parsed.reasoning == REASONING and before.reasoning is None
    assert (parsed.labels, parsed.answer, parsed.transcript) == (
        before.labels,
        before.answer,
        before.transcript,
    )
    if task.format == "labels":  # OSUM lowercases targets: still parses
        assert parse_target(key, text.lower()).labels == parsed.labels


def test_reasoning_spans_that_no_parser_could_trust_are_refused():
    with pytest.raises(FormatError, match="takes no reasoning"):
        render_target("asr", transcript="hello", reasoning="x")
    with pytest.raises(FormatError, match="takes no reasoning"):
        insert_reasoning("<TRANSCRIBE>", "hello", "x")
    with pytest.raises(FormatError, match="'<' or '>'"):
        render_target("ser", transcript="hi", labels={"emotion": "happy"}, reasoning="a <b> c")
    with pytest.raises(FormatError, match="out of place"):
        parse_target("<TRANSCRIBE> <EMOTION>", "<think>x</think>hi<HAPPY>")
    with pytest.raises(FormatError, match="more than one"):
        parse_target("<EMOTION>", "<think>x</think><think>y</think><HAPPY>")
    with pytest.raises(FormatError, match="without"):
        parse_target("<TRANSCRIBE> <S2TCHAT>", "hi<think>x<开始回答>yes")
    with pytest.raises(FormatError, match="already has"):
        insert_reasoning("<EMOTION>", "<think>x</think><HAPPY>", "y")


def _cut(i: int = 0, language: str = "en", text: str = "We won the match!", **labels) -> MonoCut:
    gender = labels.pop("gender", None)
    sup = SupervisionSegment(
        id=f"c{i}",
        recording_id=f"c{i}",
        start=0,
        duration=1,
        text=text,
        language=language,
        gender=gender,
        custom=labels,
    )
    return MonoCut(id=f"c{i}", start=0, duration=1, channel=0, supervisions=[sup])


CTX = StageContext(seed=0, shard_index=0, run_dir=Path("/nonexistent"), stage="x")
ACOUSTIC = {
    "pitch": {"level": "high", "f0_hz": 250.0, "reference": "female"},
    "speed": {"level": "fast", "rate": 6.1, "unit": "syllables_per_s"},
    "energy": {"level": "medium", "rms_dbfs": -25.0},
}


def test_add_reasoning_composes_from_known_labels_for_a_share_of_samples():
    labelled = dict(gender="female", emotion="happy", age="adult", **ACOUSTIC)
    ser = add_reasoning(template(_cut(**labelled), CTX, task="ser"), CTX)
    assert ser.custom["target"] == (
        "We won the match!<think>I hear high pitch, a fast pace, moderate volume, a female voice and an "
        "adult's voice, so this is a cheerful tone.</think><HAPPY>"
    )
    assert ser.custom["reasoning"] is True and ser.custom["instruction"].endswith((".", "?"))
    plain = template(_cut(**labelled), CTX, task="ser").custom["instruction"]
    assert (
        ser.custom["instruction"].startswith(plain + " ") and len(ser.custom["instruction"]) > len(plain) + 10
    )
    zh = add_reasoning(template(_cut(language="zh", text="我们赢了！", **labelled), CTX, task="ser"), CTX)
    assert "所以是愉快的语气。</think><HAPPY>" in zh.custom["target"]
    chat = _cut(gender="male", emotion="sad", answer="I am sorry to hear that.")
    chat = add_reasoning(template(chat, CTX, task="sttc"), CTX)
    parsed = parse_target(chat.custom["task"], chat.custom["target"])
    assert parsed.answer == "I am sorry to hear that." and "a male voice and a sad tone" in parsed.reasoning
    asr = template(_cut(**labelled), CTX, task="asr")
    assert add_reasoning(asr, CTX).custom["target"] == "We won the match!"  # ASR has no reasoning variant
    # ratio: a share fixed by (seed, cut id), the same on every call.
    cuts = [template(_cut(i, **labelled), CTX, task="sgc") for i in range(300)]
    picked = [add_reasoning(c, CTX, ratio=0.3).custom.get("reasoning", False) for c in cuts]
    assert 0.22 < sum(picked) / 300 < 0.38
    again = [
        add_reasoning(template(_cut(i, **labelled), CTX, task="sgc"), CTX, ratio=0.3) for i in range(300)
    ]
    assert [c.custom.get("reasoning", False) for c in again] == picked


def test_closed_qa_asks_only_what_the_metadata_answers():
    cut = _cut(gender="male", emotion="other", age="old", **ACOUSTIC)
    samples = qa_closed(cut, CTX, max_per_cut=10)
    fields = {s.custom["qa"]["field"]: s for s in samples}
    assert set(fields) == {"gender", "age", "pitch", "speed", "energy"}  # no question about "other"
    for s in samples:
        assert s.custom["task"] == "<QA_CLOSED>" and s.custom["source_cut_id"] == "c0"
        assert s.id == f"c0_qa_{s.custom['qa']['field']}" and s.supervisions == cut.supervisions
        assert parse_target("<QA_CLOSED>", s.custom["target"]).answer == s.custom["target"]
    assert (
        "elderly" in fields["age"].custom["target"]
        or "older" in fields["age"].custom["target"]
        or ("senior" in fields["age"].custom["target"])
    )
    assert qa_closed(cut, CTX, max_per_cut=10) == samples  # deterministic
    assert len(qa_closed(cut, CTX, max_per_cut=2)) == 2
    assert [c.id for c in qa_closed(cut, CTX, max_per_cut=1, keep_source=True)][0] == "c0"
    zh = qa_closed(_cut(language="zh", text="你好", gender="female"), CTX)
    assert zh[0].custom["instruction"].endswith(("？", "。")) and "女" in zh[0].custom["target"]
    from osum_data.run.stage import Reject

    with pytest.raises(Reject, match="no label to ask about"):
        qa_closed(_cut(), CTX)


def test_style_prior_shifts_confidence_and_breaks_only_what_the_votes_leave_open():
    assert decide(Counter(news_science=3), None, 1.0) == ("news_science", 1.0, "news_science")
    # A corpus hint against a unanimous LLM: the LLM keeps its label, confidence shows the doubt.
    assert decide(Counter(news_science=3), "audiobook", 1.0) == ("news_science", 0.75, "news_science")
    assert decide(Counter(news_science=1), "audiobook", 1.0) == ("news_science", 0.5, "news_science")
    # Where the votes are split the prior decides, and says so (the LLM's own choice is returned too).
    label, confidence, llm_top = decide(Counter(news_science=1, audiobook=1, other=1), "audiobook", 1.0)
    assert (label, llm_top) == ("audiobook", "news_science") and confidence == pytest.approx(0.5)
    # A heavy prior can overrule a majority: that is the user's explicit choice of weight.
    assert decide(Counter(news_science=2, audiobook=1), "audiobook", 1.5)[0] == "audiobook"


@pytest.mark.usefixtures("llm_env")
def test_llm_stages_reject_with_the_reason_when_the_endpoint_stays_down(tmp_path):
    with FaultServer(reply_fn=scripted_reply) as srv:
        settings = fast_settings(srv.base_url, max_retries=2)
        stage = LLMStyle(llm=settings, samples=1)
        cuts = [_cut(0, text="Press one for sales"), _cut(1, text="Hello there [[fault:500]]")]
        result = stage(cuts, CTX)
        assert [c.id for c in result.kept] == ["c0"]
        ((cut, reject),) = result.rejected
        assert (
            reject.code == "unavailable"
            and "3 attempts failed" in reject.detail
            and "HTTP 500" in reject.detail
        )
        prompt = next(k for k in srv.attempts if "fault:500" in k)
        assert srv.attempts[prompt] == 3  # 1 + max_retries, no more
        assert result.counters["requests"] == srv.requests and result.counters["retries"] == 2
        assert result.counters["llm_rejected"] == {"unavailable": 1}
        assert result.kept[0].supervisions[0].custom["style"] == "customer_service"


def test_the_answer_prompt_tells_the_llm_how_the_user_sounds():
    stage = LLMAnswer(llm=fast_settings("http://127.0.0.1:9/v1"))
    cut = _cut(gender="female", age="old", emotion="sad", text="I lost my cat.")
    system, user = stage.messages(cut, "I lost my cat.", "en")
    assert "female, elderly, sad" in system["content"] and user["content"] == "I lost my cat."
    plain = LLMAnswer(llm=fast_settings("http://127.0.0.1:9/v1"), use_labels=False)
    assert "sounds" not in plain.messages(cut, "I lost my cat.", "en")[0]["content"]
    zh = stage.messages(_cut(language="zh", gender="male", text="我的猫丢了"), "我的猫丢了", "zh")
    assert "男性" in zh[0]["content"]
