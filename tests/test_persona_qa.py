"""Persona speech end to end (personas -> LLM utterances -> espeak-ng TTS -> the usual checks -> samples),
its cuts feeding SGC, SAP, SER and STTC, and LTU-style QA with reasoning targets over them. The LLM is
the fault-injecting server with scripted answers (llm_data_helpers); TTS, runner and files are real."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml
from lhotse import CutSet
from lhotse.qa import validate
from llm_data_helpers import fast_llm_overrides, scripted_reply, stage_row
from llm_fault_server import FaultServer

from osum_data.manifest_io import read_jsonl
from osum_data.run.config import load_pipeline
from osum_data.run.runner import run_pipeline
from osum_data.run.stage import StageContext
from osum_data.synth.personas import load_personas, persona_plan
from osum_data.tasks import parse_target
from osum_data.template.builder import template
from osum_data.template.reasoning import phrase
from tests.conftest import REPO

PIPELINES = REPO / "pipelines"


def test_persona_plan_is_balanced_deterministic_and_checked(tmp_path):
    plan = persona_plan(24, seed=0, language="en")
    assert plan == persona_plan(24, seed=0, language="en")
    assert Counter(p["age"] for p in plan) == {"child": 8, "adult": 8, "old": 8}
    assert Counter(p["gender"] for p in plan) == {"male": 12, "female": 12}
    assert Counter(p["emotion"] for p in plan) == {e: 4 for e in load_personas()["emotions"]}
    homework = [p for p in plan if p["topic"] == "homework"]
    assert all(p["age"] == "child" for p in homework)  # topics limited to an age stay there
    assert persona_plan(24, seed=1, language="en") != plan  # the topic draw follows the seed
    zh = persona_plan(6, seed=0, language="zh")
    assert all(p["language"] == "zh" and "\u4e00" <= p["topic"][0] <= "\u9fff" for p in zh)
    table = yaml.safe_load((REPO / "osum_data" / "synth" / "personas.yaml").read_text())
    table["exclude"] = [{"age": "old", "gender": "female"}]
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(table))
    plan = persona_plan(12, 0, "en", str(tmp_path / "t.yaml"))
    assert len(plan) == 12 and not [p for p in plan if (p["age"], p["gender"]) == ("old", "female")]
    table["emotions"] = ["happy", "cheerful"]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(table))
    with pytest.raises(ValueError, match="'cheerful'"):
        load_personas(str(tmp_path / "bad.yaml"))


def _run(pipeline: str, inp: Path | None, out: Path, sets: list[str]):
    return run_pipeline(
        load_pipeline(PIPELINES / pipeline, sets), inp, out, workers=1, progress=False
    ).summary


def test_persona_speech_feeds_sgc_sap_ser_sttc_and_qa(tmp_path, ray_session):
    with FaultServer(reply_fn=scripted_reply) as srv:
        llm = fast_llm_overrides(srv.base_url, tmp_path / "cache")
        summary = _run(
            "persona.yaml", None, tmp_path / "persona", [*llm, "personas.n=8", "template.x_only_ratio=0.5"]
        )
        sent = srv.requests
        assert summary["in"] == 8 == summary["out"] + summary["rejected"]
        assert summary["out"] == 8, summary["rejected_by_reason"]
        assert stage_row(summary, "tts")["counters"]["tts_utterances"] == 8
        cuts = CutSet.from_file(tmp_path / "persona" / "cuts.jsonl.gz")
        validate(cuts, read_data=True)  # lhotse's manifest checks, decoding the synthesised audio
        plan = {f"persona-0-{i:06d}": p for i, p in enumerate(persona_plan(8, 0, "en"))}
        for cut in cuts:
            sup, p = cut.supervisions[0], plan[cut.id]
            assert (sup.gender, sup.custom["age"], sup.custom["emotion"]) == (
                p["gender"],
                p["age"],
                p["emotion"],
            )
            assert {sup.custom["label_source"][k] for k in ("gender", "age", "emotion")} == {"llm+tts:espeak"}
            assert sup.custom["label_source"]["text"] == "llm:fault-model"
            assert p["topic"] in sup.text and cut.sampling_rate == 16000 and cut.duration > 1
            parsed = parse_target(cut.custom["task"], cut.custom["target"])
            assert parsed.labels == {"age": p["age"], "gender": p["gender"]}
            # The same cuts make SGC, SAP and SER samples.
            ctx = StageContext(seed=0, shard_index=0, run_dir=tmp_path, stage="template")
            for task, field, value in (
                ("sgc", "gender", p["gender"]),
                ("sap", "age", p["age"]),
                ("ser", "emotion", p["emotion"]),
            ):
                sample = template(cut, ctx, task=task)
                assert parse_target(sample.custom["task"], sample.custom["target"]).labels == {field: value}
        # A source pipeline re-run makes the same personas and asks nothing.
        again = _run(
            "persona.yaml", None, tmp_path / "persona2", [*llm, "personas.n=8", "template.x_only_ratio=0.5"]
        )
        assert srv.requests == sent and stage_row(again, "llm_persona_utterance")["counters"]["requests"] == 0

        # STTC over persona speech: the answer prompt knows the voice.
        sttc = _run("sttc.yaml", tmp_path / "persona" / "cuts.jsonl.gz", tmp_path / "sttc", llm)
        assert sttc["out"] == 8 and stage_row(sttc, "llm_answer")["counters"]["requests"] == 8
        for cut in CutSet.from_file(tmp_path / "sttc" / "cuts.jsonl.gz"):
            assert (
                parse_target(cut.custom["task"], cut.custom["target"]).answer
                == cut.supervisions[0].custom["answer"]
            )

        # QA: closed from the labels and measured attributes, open from the LLM, with reasoning spans.
        sets = [*llm, "add_reasoning.ratio=1.0", "llm_qa_open.pairs=3"]
        qa = _run("qa.yaml", tmp_path / "persona" / "cuts.jsonl.gz", tmp_path / "qa", sets)
    row = stage_row(qa, "llm_qa_open")
    # Per cut: the source goes on; of the 3 scripted pairs one is kept, one says "cannot tell" (a text
    # filter), one is not supported by the description (the judge); each pair is its own cut.
    assert row["in"] == 8 and row["out"] == 8 + 8 and row["rejected"] == 16 and row["derived"] == 24
    assert qa["rejected_by_reason"] == {"llm_qa_open:cannot_tell": 8, "llm_qa_open:not_answerable": 8}
    assert stage_row(qa, "qa_closed")["derived"] == 8  # 2 closed questions per source cut
    samples = list(read_jsonl(tmp_path / "qa" / "cuts.jsonl.gz"))
    by_key = Counter(s["custom"]["task"] for s in samples)
    assert by_key == {"<QA_OPEN>": 8, "<QA_CLOSED>": 16}
    for s in samples:
        custom = s["custom"]
        parsed = parse_target(custom["task"], custom["target"])
        assert parsed.answer and parsed.reasoning and custom["reasoning"] is True
        assert custom["source_cut_id"].startswith("persona-0-") and custom["instruction"].endswith((".", "?"))
        if custom["task"] == "<QA_CLOSED>":
            field, value = custom["qa"]["field"], custom["qa"]["value"]
            assert field in ("gender", "age", "emotion", "pitch", "speed", "energy")
            assert parsed.reasoning.endswith(f"{phrase(field, value, 'en')}.")  # the conclusion names it
    rejects = list(read_jsonl(tmp_path / "qa" / "rejects.jsonl.gz"))
    assert all(r["custom"]["source_cut_id"] == r["id"].rsplit("_oqa_", 1)[0] for r in rejects)
    codes = Counter(r["custom"]["reject"]["code"] for r in rejects)
    assert codes == {"cannot_tell": 8, "not_answerable": 8}
    assert all(
        r["custom"]["reject"]["reason"].startswith(f"cut {r['custom']['source_cut_id']} pair")
        for r in rejects
    )
