"""Model labelers: a local classifier labels gender, age or emotion (`label_source: model:<name>`).

One interface for every backend: a labeler has `classes` (its class names) and
`predict(waves, sampling_rate) -> list[list[float]]` (class probabilities per waveform). A model
directory holds either
- a transformers audio-classification checkpoint (`config.json` with `id2label`, a feature extractor,
  weights: a wav2vec2/HuBERT/WavLM gender or emotion model saved with `save_pretrained`), or
- a `labeler.py` whose `load(directory)` returns such an object (any code: sklearn, ONNX, a rule).
Weights are read from that directory only, never from a hub.

The `model_label` stage predicts for every cut. It never overwrites a corpus label: a cut with
one gets the prediction beside it (`custom.model_labels`) and counts towards the agreement report
(per-stage counters in summary.json; `python -m osum_data.label.models agreement CUTS --field F` for
a manifest); a cut without one is labelled by the model when it is confident enough, with
`custom.label_source[field] = model:<name>` and `custom.confidence[field]`. Below the floor
(`min_confidence`, the top class probability) such a cut is rejected as `low_confidence_<field>`
(`below_floor: keep` keeps it unlabelled instead, for a later labeler to try).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import numpy as np
from lhotse.cut import Cut
from lhotse.utils import fastcopy
from pydantic import DirectoryPath, Field, PositiveFloat, PositiveInt

from osum_data.run.stage import Reject, StageContext, StageResult, register_stage, rejecting
from osum_data.tasks.registry import LabelError, NoLabel, registry

Field_ = Literal["gender", "age", "emotion"]


class Labeler(Protocol):
    classes: list[str]
    sampling_rate: int

    def predict(self, waves: list[np.ndarray], sampling_rate: int) -> list[list[float]]: ...


class TransformersClassifier:
    """A transformers audio-classification checkpoint in a local directory."""

    def __init__(self, path: Path, device: str = "cpu", trust_remote_code: bool = False):
        import torch
        from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

        self.torch = torch
        kwargs = {"local_files_only": True, "trust_remote_code": trust_remote_code}
        self.extractor = AutoFeatureExtractor.from_pretrained(path, **kwargs)
        self.model = AutoModelForAudioClassification.from_pretrained(path, **kwargs).eval().to(device)
        labels = self.model.config.id2label
        self.classes = [str(labels[i]) for i in range(len(labels))]
        self.sampling_rate = int(getattr(self.extractor, "sampling_rate", 16000))
        self.device = device

    def predict(self, waves: list[np.ndarray], sampling_rate: int) -> list[list[float]]:
        inputs = self.extractor(
            waves, sampling_rate=sampling_rate, return_tensors="pt", padding=True, return_attention_mask=True
        )
        with self.torch.inference_mode():
            logits = self.model(**{k: v.to(self.device) for k, v in inputs.items()}).logits
        return logits.float().softmax(-1).cpu().numpy().tolist()


def load_labeler(path: str | Path, device: str = "cpu", trust_remote_code: bool = False) -> Labeler:
    """The labeler in `path`: its `labeler.py` if there is one, else a transformers checkpoint."""
    path = Path(path)
    code = path / "labeler.py"
    if code.is_file():
        spec = importlib.util.spec_from_file_location(f"osum_labeler_{abs(hash(str(path.resolve())))}", code)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if not hasattr(module, "load"):
            raise ValueError(f"{code} defines no load(directory) function")
        labeler = module.load(path)
    elif (path / "config.json").is_file():
        labeler = TransformersClassifier(path, device, trust_remote_code)
    else:
        raise ValueError(
            f"model directory {str(path)!r} has neither a labeler.py nor a transformers config.json"
        )
    for attr in ("classes", "predict"):
        if not hasattr(labeler, attr):
            raise ValueError(f"the labeler loaded from {str(path)!r} has no {attr!r}")
    return labeler


def current_label(cut: Cut, field: str) -> str | None:
    sup = cut.supervisions[0]
    value = sup.gender if field == "gender" else (sup.custom or {}).get(field)
    return value or None


@register_stage("model_label", version=1)
class ModelLabel:
    """Predict `field` with the labeler in `model`; fill the label where the corpus has none."""

    def __init__(
        self,
        model: DirectoryPath,
        field: Field_,
        model_name: str = "",
        fill: bool = True,
        min_confidence: Annotated[float, Field(ge=0.0, le=1.0)] = 0.7,
        below_floor: Literal["reject", "keep"] = "reject",
        label_map: dict[str, str] | None = None,
        batch_size: PositiveInt = 8,
        max_seconds: PositiveFloat = 30.0,
        device: str = "cpu",
        trust_remote_code: bool = False,
    ):
        self.field, self.fill, self.min_confidence = field, fill, min_confidence
        self.below_floor = below_floor
        self.name = model_name or Path(model).name
        self.source = f"model:{self.name}"
        self.batch_size, self.max_seconds = batch_size, max_seconds
        self.labeler = load_labeler(model, device, trust_remote_code)
        self.sampling_rate = int(getattr(self.labeler, "sampling_rate", 16000))
        self.mapping = {c: self._canonical(c, label_map or {}) for c in self.labeler.classes}

    def _canonical(self, cls: str, label_map: dict[str, str]) -> str | None:
        """The model's class name as a label id (None: a class with no label of ours, e.g. 'unknown'
        declared `keep` in corpus_maps.yaml under `model:<name>`)."""
        reg = registry()
        try:
            value = label_map.get(cls, cls)
            found = reg.lookup(self.field, value, self.source)
            return None if isinstance(found, NoLabel) else reg.vocabulary(self.field).get(found).id
        except LabelError as e:
            raise ValueError(
                f"model {self.name!r}: class {cls!r} maps to no {self.field} label ({e}); "
                f"map it with label_map or corpus_maps.yaml"
            ) from None

    def __call__(self, cuts: list[Cut], ctx: StageContext) -> StageResult:
        result = StageResult()
        ready: list[tuple[Cut, np.ndarray]] = []
        for cut in cuts:
            with rejecting(result, cut):
                ready.append((cut, self._audio(cut)))
        counts: Counter = Counter()
        confusion: Counter = Counter()
        for i in range(0, len(ready), self.batch_size):
            batch = ready[i : i + self.batch_size]
            probs = self.labeler.predict([w for _, w in batch], self.sampling_rate)
            for (cut, _), p in zip(batch, probs, strict=True):
                with rejecting(result, cut):
                    result.kept.append(self._label(cut, np.asarray(p, dtype=np.float64), counts, confusion))
        both, agree = counts.pop("both", 0), counts.pop("agree", 0)
        result.counters = {
            **counts,
            "agreement": {self.field: {"both": both, "agree": agree}},
            "confusion": {f"{self.field}:{k}": v for k, v in confusion.items()},
        }
        return result

    def _audio(self, cut: Cut) -> np.ndarray:
        if not cut.supervisions:
            raise Reject("no_supervision", f"cut {cut.id} has no supervision")
        if not cut.has_recording:
            raise Reject("no_audio", f"cut {cut.id} has no recording")
        audio = cut.resample(self.sampling_rate) if cut.sampling_rate != self.sampling_rate else cut
        samples = np.asarray(audio.load_audio(), dtype=np.float32)
        return samples.mean(axis=0)[: int(self.max_seconds * self.sampling_rate)]

    def _label(self, cut: Cut, probs: np.ndarray, counts: Counter, confusion: Counter) -> Cut:
        best = int(np.argmax(probs))
        raw, confidence = self.labeler.classes[best], float(probs[best])
        value = self.mapping[raw]
        counts["predicted"] += 1
        sup = cut.supervisions[0]
        custom = dict(sup.custom or {})
        custom["model_labels"] = {
            **(custom.get("model_labels") or {}),
            self.field: {
                "value": value,
                "raw": raw,
                "confidence": round(confidence, 4),
                "source": self.source,
            },
        }
        existing = current_label(cut, self.field)
        gender = sup.gender
        if existing is not None:
            if value is not None:
                counts["both"] += 1
                counts["agree"] += int(value == existing)
                confusion[f"{existing}->{value}"] += 1
        elif self.fill and value is not None and confidence >= self.min_confidence:
            counts["filled"] += 1
            custom["label_source"] = {**(custom.get("label_source") or {}), self.field: self.source}
            custom["confidence"] = {**(custom.get("confidence") or {}), self.field: round(confidence, 4)}
            if self.field == "gender":
                gender = value
            else:
                custom[self.field] = value
        elif value is not None:
            counts["low_confidence"] += 1
            if self.fill and self.below_floor == "reject":
                raise Reject(
                    f"low_confidence_{self.field}",
                    f"cut {cut.id}: {self.source} says {self.field} {value!r} with probability "
                    f"{confidence:.3f} < min_confidence {self.min_confidence}",
                )
        new_sup = fastcopy(sup, custom=custom, gender=gender)
        return fastcopy(cut, supervisions=[new_sup, *cut.supervisions[1:]])


def agreement(cut_dicts: Iterable[dict[str, Any]], field: str) -> dict[str, Any]:
    """Corpus label vs model prediction over cuts that have both: count, accuracy, Cohen's kappa
    and the confusion table (`corpus->model`)."""
    pairs = []
    for d in cut_dicts:
        sups = d.get("supervisions") or []
        if not sups:
            continue
        custom = sups[0].get("custom") or {}
        corpus = sups[0].get("gender") if field == "gender" else custom.get(field)
        predicted = ((custom.get("model_labels") or {}).get(field) or {}).get("value")
        source = (custom.get("label_source") or {}).get(field, "corpus")
        if corpus and predicted and not str(source).startswith("model:"):
            pairs.append((corpus, predicted))
    n = len(pairs)
    if not n:
        return {"field": field, "both": 0}
    agree = sum(a == b for a, b in pairs)
    labels = sorted({x for p in pairs for x in p})
    p_o = agree / n
    p_e = sum((sum(a == lab for a, _ in pairs) / n) * (sum(b == lab for _, b in pairs) / n) for lab in labels)
    kappa = (p_o - p_e) / (1 - p_e) if p_e < 1 else 1.0
    confusion = Counter(f"{a}->{b}" for a, b in pairs)
    return {
        "field": field,
        "both": n,
        "agree": agree,
        "accuracy": round(p_o, 4),
        "kappa": round(kappa, 4),
        "confusion": dict(sorted(confusion.items())),
    }


def main(argv: list[str] | None = None) -> int:
    from osum_data.manifest_io import read_jsonl

    parser = argparse.ArgumentParser(prog="python -m osum_data.label.models")
    sub = parser.add_subparsers(dest="command", required=True)
    agree = sub.add_parser("agreement", help="corpus vs model labels of a cuts manifest")
    agree.add_argument("cuts", nargs="+", type=Path)
    agree.add_argument("--field", required=True, choices=["gender", "age", "emotion"])
    args = parser.parse_args(argv)

    def items():
        for path in args.cuts:
            yield from read_jsonl(path)

    print(json.dumps(agreement(items(), args.field), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
