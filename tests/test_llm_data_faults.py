"""SSR and STTC pipelines, run in a subprocess whose environment holds the API key (as `osum-data run`
is), against the fault-injecting OpenAI-compatible server on loopback (a test double: no real server
fails on cue; its answers are scripted per schema in llm_data_helpers). Real audio, real runner and
Ray, real cache files.

Pinned here: every input ends in the output or the rejects with a reason; retries stay bounded; a
second run into a new folder sends zero requests and writes the same samples; the API key reaches
the server but appears in no file the toolkit wrote."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from lhotse import CutSet
from llm_data_helpers import (
    CHAT_CODES,
    fast_llm_overrides,
    prompt_manifest,
    run_pipelines,
    scripted_reply,
    stage_row,
)
from llm_fault_server import FaultServer
from llm_helpers import SENTINEL_KEY, files_containing

from osum_data.manifest_io import read_jsonl
from osum_data.tasks import parse_target, registry

SSR_ROWS = [
    ("vm-savefolder", "Which folder should I save the message to?"),
    ("agent-pass", "Please enter your password followed by the pound key."),
    ("vm-nobodyavail", "Nobody is available to take your call [[fault:429x2]]"),
    ("queue-thankyou", "Thank you for your patience [[fault:500x2]]"),
    ("tt-weasels", "Weasels have eaten our phone system [[fault:timeoutx1]]"),
    ("tt-monkeysintro", "They have been carried away by monkeys [[fault:malformedx1]]"),
    ("conf-onlyperson", "You are the only person here [[fault:malformed]]"),
    ("privacy-prompt", "Please enter your phone number [[fault:refusal]]"),
    ("vm-msgsaved", "Your message has been saved [[fault:bodyx1]]"),
    ("pls-hold-while-try", "Please hold while we try to connect you [[fault:dropx1]]"),
]
# Keep the `[[fault:...]]` markers in the transcripts (the server reads them from the prompt).
COMMON = ['normalize_text.strip_brackets=["()"]', "audio_policy.min_sampling_rate=8000"]


STTC_ROWS = [
    ("vm-savefolder", "What will the weather be like tomorrow?"),
    ("agent-pass", "Please refuse this request for me."),
    ("vm-nobodyavail", "Is this unknown to you or not?"),
    ("queue-thankyou", "Tell me whoareyou right now."),
    ("tt-weasels", "Give me a short answer please."),
    ("tt-monkeysintro", "Tell me a long story about monkeys."),
    ("conf-onlyperson", "Say something in german please."),
    ("privacy-prompt", "Show me brackets in a web page."),
    ("vm-msgsaved", "Shall we go dupone for lunch?"),
    ("pls-hold-while-try", "Shall we go duptwo for dinner?"),
    ("vm-passchanged", "There is nothing to answer here."),
    ("vm-tooshort", "Please parrot back every word I say here."),
    ("demo-thanks", "What time is it now? [[fault:429x2]]"),
    ("number-not-answering", "Why is the number not answering? [[fault:500x2]]"),
]


@dataclass
class Served:
    """What one pipeline's two runs (into `a`, then a new folder `b`) did, and what its server saw."""

    manifest: Path
    summary: dict
    again: dict
    requests: int
    attempts: dict
    faults: dict
    auth_headers: set


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> dict[str, Served]:
    """SSR (3 samples each) and STTC, each against its own fault server, each run twice: all four runs
    in one subprocess (one Ray start) whose environment holds the API key."""
    root = tmp_path_factory.mktemp("llm-data-faults")
    plans = {
        "ssr": (SSR_ROWS, ["llm_style.samples=3"]),
        "sttc": (STTC_ROWS, ["template.x_only_ratio=0.5"]),
    }
    with FaultServer(timeout_sleep_s=1.5, reply_fn=scripted_reply) as ssr_srv:
        with FaultServer(timeout_sleep_s=1.5, reply_fn=scripted_reply) as sttc_srv:
            servers = {"ssr": ssr_srv, "sttc": sttc_srv}
            jobs, manifests = [], {}
            for name, (rows, extra) in plans.items():
                manifests[name] = prompt_manifest(root / f"{name}.jsonl.gz", rows)
                sets = COMMON + fast_llm_overrides(servers[name].base_url, root / "llm-cache") + extra
                jobs += [
                    dict(pipeline=f"{name}.yaml", input=manifests[name], output=root / name / d, sets=sets)
                    for d in "ab"
                ]
            env = {
                "OPENAI_API_KEY": SENTINEL_KEY,
                "OPENAI_BASE_URL": "",
                "OSUM_CACHE": str(root / "user-cache"),
            }
            ssr_a, ssr_b, sttc_a, sttc_b = run_pipelines(jobs, env)
    summaries = {"ssr": (ssr_a, ssr_b), "sttc": (sttc_a, sttc_b)}
    out = {
        name: Served(
            manifests[name],
            *summaries[name],
            srv.requests,
            dict(srv.attempts),
            dict(srv.faults),
            set(srv.auth_headers),
        )
        for name, srv in servers.items()
    }
    out["root"] = root
    return out


def _check_conservation(summary: dict, out: Path, manifest: Path) -> None:
    assert summary["in"] == summary["out"] + summary["rejected"]
    kept = [c["id"] for c in read_jsonl(out / "cuts.jsonl.gz")]
    rejects = list(read_jsonl(out / "rejects.jsonl.gz"))
    assert sorted(kept + [c["id"] for c in rejects]) == sorted(c["id"] for c in read_jsonl(manifest))
    assert all(c["custom"]["reject"]["reason"] for c in rejects)


def test_the_api_key_reaches_the_servers_and_no_written_file(served):
    assert served["ssr"].auth_headers == served["sttc"].auth_headers == {f"Bearer {SENTINEL_KEY}"}
    root = served["root"]
    assert (root / "llm-cache").is_dir() and (root / "ssr" / "a" / "pipeline.yaml").is_file()
    assert files_containing(root, SENTINEL_KEY) == []  # outputs, resolved pipelines, cache, batch-free


def test_ssr_with_self_consistency_survives_faults_and_reruns_from_the_cache(served):
    run = served["ssr"]
    out = served["root"] / "ssr"
    # Bounded: 3 samples x (max_retries + 1) x (malformed_retries + 1) attempts per prompt at most.
    assert max(run.attempts.values()) <= 3 * 4 * 2
    assert run.faults["429"] == 2 and run.faults["500"] == 2 and run.faults["timeout"] == 1

    summary = run.summary
    _check_conservation(summary, out / "a", run.manifest)
    assert summary["rejected_by_reason"] == {"llm_style:malformed": 1, "llm_style:refusal": 1}
    rejects = {c["id"]: c["custom"]["reject"] for c in read_jsonl(out / "a" / "rejects.jsonl.gz")}
    assert '{"answer": "unterminated' in rejects["p06"]["reason"]  # the raw answer is in the reason
    row = stage_row(summary, "llm_style")
    # Every request the server saw was the first run's: the second sent none.
    assert row["counters"]["requests"] == run.requests and row["counters"]["retries"] >= 2 + 2 + 1 + 1 + 1
    assert row["counters"]["completion_tokens"] > 0

    cuts = CutSet.from_file(out / "a" / "cuts.jsonl.gz")
    assert len(cuts) == 8
    for cut in cuts:
        sup = cut.supervisions[0]
        parsed = parse_target(cut.custom["task"], cut.custom["target"])
        assert parsed.labels == {"style": sup.custom["style"]}
        assert cut.custom["task"] in registry().task("ssr").keys
        assert sup.custom["label_source"]["style"] == "llm:fault-model"
        # Three samples at temperature 0.7: seeds 0, 1 agree, seed 2 says "other": 2 of 3.
        assert sum(sup.custom["style_votes"].values()) == 3
        assert sup.custom["confidence"]["style"] == pytest.approx(2 / 3, abs=1e-3)
    styles = {c.id: c.supervisions[0].custom["style"] for c in cuts}
    assert styles["p01"] == "customer_service" and styles["p04"] == "daily_speech"

    # The second run, into a new folder: all from the cache, nothing sent, the same samples.
    row = stage_row(run.again, "llm_style")
    assert row["counters"]["requests"] == 0 and row["counters"]["cache_hits"] == 3 * 10
    assert (out / "a" / "cuts.jsonl.gz").read_bytes() == (out / "b" / "cuts.jsonl.gz").read_bytes()


def test_sttc_judge_answers_and_filters_end_every_utterance_with_a_reason(served):
    run = served["sttc"]
    out = served["root"] / "sttc"
    summary = run.summary
    assert max(run.attempts.values()) <= 4 * 2
    _check_conservation(summary, out / "a", run.manifest)
    expected = {f"llm_answer:{c}": 1 for c in CHAT_CODES.values() if c}
    assert summary["rejected_by_reason"] == {**expected, "llm_answerable:not_answerable": 1}

    cuts = CutSet.from_file(out / "a" / "cuts.jsonl.gz")
    assert sorted(c.id for c in cuts) == ["p00", "p08", "p12", "p13"]
    assert {c.custom["task"] for c in cuts} <= {"<TRANSCRIBE> <S2TCHAT>", "<S2TCHAT>"}
    for cut in cuts:
        sup = cut.supervisions[0]
        parsed = parse_target(cut.custom["task"], cut.custom["target"])
        assert parsed.answer == sup.custom["answer"]
        if cut.custom["task"] == "<TRANSCRIBE> <S2TCHAT>":
            assert cut.custom["target"] == f"{sup.text}<开始回答>{sup.custom['answer']}"
            assert parsed.transcript == sup.text
        assert sup.custom["label_source"]["answer"] == "llm:fault-model"
    assert "sunny" in next(c for c in cuts if c.id == "p00").supervisions[0].custom["answer"]

    judge, answer = stage_row(summary, "llm_answerable"), stage_row(summary, "llm_answer")
    assert judge["counters"]["requests"] + answer["counters"]["requests"] == run.requests  # none from run b
    assert stage_row(run.again, "llm_answerable")["counters"]["requests"] == 0
    assert stage_row(run.again, "llm_answer")["counters"]["requests"] == 0
    assert run.again["rejected_by_reason"] == summary["rejected_by_reason"]
    assert (out / "a" / "cuts.jsonl.gz").read_bytes() == (out / "b" / "cuts.jsonl.gz").read_bytes()
