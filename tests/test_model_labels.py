"""Model labelers: a transformers audio classifier this test builds and saves (tiny, with a fixed
output so the expected labels are known), and a `labeler.py` directory (real code: an F0 threshold),
each loaded from its local directory; corpus labels are never overwritten, missing ones are filled as
`model:<name>`, and corpus/model agreement is counted."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from lhotse import CutSet

from osum_data.label.models import agreement, load_labeler
from osum_data.manifest_io import read_jsonl, write_jsonl
from osum_data.run.config import build_config
from osum_data.run.params import validate_params
from osum_data.run.runner import run_pipeline
from osum_data.run.stage import StageContext, get_stage, load_stage_modules
from tests.para_fixtures import import_folder

load_stage_modules(["osum_data.label.models"])
FEMALE_P = 1 / (1 + math.exp(-2.0))  # softmax of logits (0, 2)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A 1-layer wav2vec2 classifier with classes M/F whose head always says F with p = 0.881."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    path = tmp_path_factory.mktemp("models") / "tiny-gender"
    config = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16, 16),
        conv_stride=(5, 4, 4),
        conv_kernel=(10, 8, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        classifier_proj_size=16,
        num_labels=2,
        id2label={0: "M", 1: "F"},
        label2id={"M": 0, "F": 1},
    )
    torch.manual_seed(0)
    model = Wav2Vec2ForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 2.0]))
    model.save_pretrained(path)
    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def cuts(tmp_path_factory) -> list:
    """Two real female prompts, a synthetic male voice, and a cut without gender."""
    from osum_data.demo import SOUNDS_DIR
    from osum_data.demo.para import plan, synthesise

    folder = tmp_path_factory.mktemp("lab") / "c"
    folder.mkdir()
    man = next(p for p in plan()["personas"] if p["id"] == "man_espeak")
    synthesise(
        man, plan()["emotions"]["neutral"], "Please put the books back on the shelf.", folder / "man.wav"
    )
    rows = [
        ["f1", str(SOUNDS_DIR / "activated.wav"), "activated", "female"],
        ["f2", str(SOUNDS_DIR / "agent-pass.wav"), "please enter your password", "female"],
        ["m1", "man.wav", "Please put the books back on the shelf.", "male"],
        ["x1", str(SOUNDS_DIR / "auth-thankyou.wav"), "thank you", ""],
    ]
    return list(CutSet.from_file(import_folder(folder, ["id", "audio", "text", "gender"], rows)))


def build(**params):
    defn = get_stage("model_label")
    return defn.factory(**validate_params(defn, params)[0])


def test_a_saved_transformers_classifier_fills_missing_labels_and_counts_agreement(
    tiny_model, cuts, tmp_path
):
    stage = build(
        model=str(tiny_model), field="gender", model_name="tiny", label_map={"M": "male", "F": "female"}
    )
    result = stage(cuts, StageContext(0, 0, tmp_path, "model_label"))
    assert not result.rejected and [c.id for c in result.kept] == ["f1", "f2", "m1", "x1"]
    out = {c.id: c.supervisions[0] for c in result.kept}
    assert out["m1"].gender == "male"  # the corpus label stays
    assert out["m1"].custom["model_labels"]["gender"] == {
        "value": "female",
        "raw": "F",
        "confidence": round(FEMALE_P, 4),
        "source": "model:tiny",
    }
    assert out["x1"].gender == "female"
    assert out["x1"].custom["label_source"]["gender"] == "model:tiny"
    assert out["x1"].custom["confidence"]["gender"] == round(FEMALE_P, 4)
    assert result.counters == {
        "predicted": 4,
        "filled": 1,
        "agreement": {"gender": {"both": 3, "agree": 2}},
        "confusion": {"gender:female->female": 2, "gender:male->female": 1},
    }
    report = agreement([c.to_dict() for c in result.kept], "gender")
    assert report == {
        "field": "gender",
        "both": 3,
        "agree": 2,
        "accuracy": 0.6667,
        "kappa": 0.0,  # the model says "female" whatever it hears: no better than chance
        "confusion": {"female->female": 2, "male->female": 1},
    }
    # Under the floor a cut the model would label is rejected, naming the measure and the floor
    # (a cut with a corpus label keeps it whatever the model says)...
    unsure = build(
        model=str(tiny_model), field="gender", label_map={"M": "male", "F": "female"}, min_confidence=0.9
    )
    res = unsure(cuts, StageContext(0, 0, tmp_path, "model_label"))
    assert [c.id for c in res.kept] == ["f1", "f2", "m1"] and res.counters["low_confidence"] == 1
    ((cut, reason),) = res.rejected
    assert cut.id == "x1" and reason.code == "low_confidence_gender"
    assert f"probability {FEMALE_P:.3f} < min_confidence 0.9" in reason.detail
    # ... or kept unlabelled for a later labeler, when asked
    keep = build(
        model=str(tiny_model),
        field="gender",
        label_map={"M": "male", "F": "female"},
        min_confidence=0.9,
        below_floor="keep",
    )
    res = keep(cuts, StageContext(0, 0, tmp_path, "model_label"))
    assert not res.rejected and not [c for c in res.kept if c.id == "x1"][0].supervisions[0].gender
    with pytest.raises(ValueError, match="min_confidence"):
        build(model=str(tiny_model), field="gender", min_confidence=1.2)
    with pytest.raises(ValueError, match="model 'tiny-gender': class 'F' maps to no gender label"):
        build(model=str(tiny_model), field="gender", label_map={"F": "femme"})


LABELER_PY = '''
"""Gender from median F0 (librosa's YIN): below 165 Hz male. A stand-in for a real checkpoint."""
import json
from pathlib import Path

import librosa
import numpy as np


class PitchGender:
    classes = ["male", "female"]
    sampling_rate = 16000

    def __init__(self, threshold_hz):
        self.threshold = threshold_hz

    def predict(self, waves, sampling_rate):
        out = []
        for w in waves:
            f0 = float(np.median(librosa.yin(w, fmin=60, fmax=400, sr=sampling_rate)))
            out.append([1.0, 0.0] if f0 < self.threshold else [0.0, 1.0])
        return out


def load(directory):
    return PitchGender(json.loads((Path(directory) / "settings.json").read_text())["threshold_hz"])
'''


def test_a_labeler_py_directory_runs_in_a_pipeline_with_agreement_in_the_summary(cuts, tmp_path, ray_session):
    model = tmp_path / "pitch-gender"
    model.mkdir()
    (model / "labeler.py").write_text(LABELER_PY)
    (model / "settings.json").write_text('{"threshold_hz": 165}')
    assert load_labeler(model).classes == ["male", "female"]
    manifest = tmp_path / "in.jsonl.gz"
    write_jsonl(manifest, [c.to_dict() for c in cuts])
    cfg = build_config(
        {
            "name": "lab",
            "imports": ["osum_data.label.models"],
            "stages": [
                {"stage": "model_label", "model": str(model), "field": "gender"},
                {"stage": "template", "task": "sgc"},
            ],
        }
    )
    summary = run_pipeline(cfg, manifest, tmp_path / "out", workers=1, progress=False).summary
    row = next(s for s in summary["stages"] if s["stage"] == "model_label")
    assert row["counters"]["agreement"] == {"gender": {"both": 3, "agree": 3}}  # F0 tells these apart
    assert row["counters"]["filled"] == 1 and summary["out"] == 4
    x1 = next(d for d in read_jsonl(tmp_path / "out" / "cuts.jsonl.gz") if d["id"] == "x1")
    assert x1["custom"]["target"].endswith("<FEMALE>")
    assert x1["supervisions"][0]["custom"]["label_source"]["gender"] == "model:pitch-gender"


def test_a_model_directory_without_a_model_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="has neither a labeler.py nor a transformers config.json"):
        load_labeler(tmp_path)
