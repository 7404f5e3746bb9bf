"""The SRWT contract (`prepare tsv` output -> pipelines/srwt.yaml, default offline aligner) and the
long-form pipeline (long recording -> VAD segments -> pseudo-labels -> samples), on real speech."""

from __future__ import annotations

from pathlib import Path

import pytest
from lhotse import CutSet

from osum_data.corpora import prepare
from osum_data.demo import build_asterisk_corpus
from osum_data.demo.joined import longform_input
from osum_data.label.align.words import reference_words
from osum_data.run.config import load_pipeline
from osum_data.run.runner import run_pipeline
from osum_data.tasks import parse_target

REPO = Path(__file__).resolve().parents[1]


def test_srwt_contract_on_prepare_tsv_output(tmp_path, ray_session):
    build_asterisk_corpus(tmp_path / "corpus", limit=40)
    prepare("tsv", tmp_path / "corpus", tmp_path / "import")
    cfg = load_pipeline(
        REPO / "pipelines/srwt.yaml", ["audio_policy.min_sampling_rate=8000", "shard_size=20"]
    )
    res = run_pipeline(
        cfg, tmp_path / "import" / "cuts.jsonl.gz", tmp_path / "out", workers=2, progress=False
    )
    s = res.summary
    assert s["in"] == 40 and s["in"] == s["out"] + s["rejected"]
    assert s["out"] >= 30, s["rejected_by_reason"]
    assert set(s["rejected_by_reason"]) <= {"normalize_text:empty_transcript", "align:oov_word"}
    for cut in CutSet.from_file(tmp_path / "out" / "cuts.jsonl.gz"):
        sup = cut.supervisions[0]
        words = reference_words(sup.text, sup.language)
        items = sup.alignment["word"]
        assert [a.symbol for a in items] == [w.text for w in words]
        assert cut.custom["task"] == "<TRANSCRIBE> <ALIGN>"
        parsed = parse_target(cut.custom["task"], cut.custom["target"])
        assert [w.text for w in parsed.words] == [w.text for w in words]
        assert all(0 <= a.start < a.end <= cut.duration + 1e-6 for a in items)


@pytest.mark.slow
def test_longform_pipeline_segments_and_labels_a_long_recording(tmp_path, ray_session):
    cuts = longform_input(tmp_path, limit=4)
    (long,) = CutSet.from_file(cuts)
    cfg = load_pipeline(REPO / "pipelines/longform.yaml", ["audio_policy.min_sampling_rate=8000"])
    res = run_pipeline(cfg, cuts, tmp_path / "out", workers=1, progress=False)
    s = res.summary
    out = list(CutSet.from_file(tmp_path / "out" / "cuts.jsonl.gz"))
    assert len(out) >= 3 and s["in"] == 1 and s["in"] == s["out"] - s["derived"] + s["rejected"]
    for cut in out:
        assert cut.custom["source_cut_id"] == long.id and cut.recording_id == long.recording_id
        assert cut.custom["task"] == "<TRANSCRIBE>" and cut.custom["target"] == cut.supervisions[0].text
        assert cut.supervisions[0].custom["label_source"]["text"] == "model:whisper-tiny.en"
        assert cut.duration <= 20.0
