"""What a run reports: generation metrics during training (beside majority baselines), TensorBoard,
peak memory, skipped updates; OSUM's schedule, SpecAugment and decoding options."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json  # noqa: E402
import math  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402
from lhotse import CutSet, Recording, SupervisionSegment  # noqa: E402

from osum_data.demo.task_cuts import demo_task_cuts  # noqa: E402
from tests.conftest import REPO, speech  # noqa: E402
from training.config import DecodeConfig, OptimConfig, SpecAugmentConfig, load_config  # noqa: E402
from training.features import log_mel, spec_augment  # noqa: E402
from training.metrics import answer_f1, task_metrics  # noqa: E402
from training.train import StepGuard, lr_lambda, train  # noqa: E402

TINY = REPO / "training" / "configs" / "tiny.yaml"


def records(run) -> list[dict]:
    return [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]


def test_label_accuracy_is_reported_beside_the_majority_baseline():
    rows = [{"task": "<TRANSCRIBE> <GENDER>", "ref": f"hello there<{g}>", "hyp": "hello there<FEMALE>"}
            for g in ("FEMALE", "FEMALE", "FEMALE", "MALE")]  # fmt: skip
    m = task_metrics(rows)["<TRANSCRIBE> <GENDER>"]
    # A model that always answers <FEMALE> scores exactly the majority baseline: visibly no better.
    assert m["label_accuracy"] == m["majority_baseline"] == 0.75 and m["majority_labels"] == "gender=female"
    assert m["wer"] == 0.0


def test_chat_answers_are_scored_with_token_f1():
    assert answer_f1("the capital is Paris", "Paris is the capital") == 1.0
    assert answer_f1("北京是首都", "首都是北京") == 1.0
    assert 0 < answer_f1("it is sunny today", "it rains today") < 1
    rows = [
        {
            "task": "<TRANSCRIBE> <S2TCHAT>",
            "ref": "how are you<开始回答>I am fine",
            "hyp": "how are you<开始回答>I am fine thanks",
        }
    ]
    m = task_metrics(rows)["<TRANSCRIBE> <S2TCHAT>"]
    assert m["answer_f1"] == pytest.approx(2 * 1 * 0.75 / 1.75) and m["wer"] == 0.0


def test_inverse_sqrt_schedule_is_wenets_warmuplr():
    o = OptimConfig(lr=5e-5, warmup_steps=8000, decay="inverse_sqrt")
    f = lr_lambda(o)
    for step in (0, 1, 3999, 7999, 8000, 20000, 199999):
        s = step + 1  # WeNet's WarmupLR counts from 1
        wenet = 8000**0.5 * min(s**-0.5, s * 8000**-1.5)
        assert f(step) == pytest.approx(wenet, rel=1e-9), step
    assert f(7999) == pytest.approx(1.0) and f(31999) == pytest.approx(0.5)


def test_osum_spec_augment_narrow_frequency_masks_zero_fill_and_spec_sub():
    audio, _ = speech("activated")
    mel = log_mel(audio)
    cfg = SpecAugmentConfig(freq_masks=2, freq_width=10, time_masks=0, fill="zero", sub_masks=0)
    for seed in range(30):
        out = spec_augment(mel, cfg, torch.Generator().manual_seed(seed))
        zero_rows = (out == 0).all(dim=1).sum().item()
        assert 1 <= zero_rows <= 20  # at most 2 masks of at most 10 bins
    sub = SpecAugmentConfig(freq_masks=0, time_masks=0, sub_masks=3, sub_width=30)
    out = spec_augment(mel, sub, torch.Generator().manual_seed(3))
    changed = (out != mel).any(dim=0)
    assert 0 < int(changed.sum()) <= 90
    # every substituted frame is a copy of an earlier frame of the utterance
    for t in changed.nonzero()[:, 0].tolist():
        assert any(torch.equal(out[:, t], mel[:, u]) for u in range(t))


def test_step_guard_skips_non_finite_and_spiking_updates():
    g = StepGuard(OptimConfig(spike_factor=5.0, spike_warmup=3))
    assert [g.allow(x) for x in (1.0, 1.2, 0.9, 30.0, 1.1, math.nan, math.inf)] == [
        True, True, True, False, True, False, False]  # fmt: skip
    assert g.skipped == 3
    g2 = StepGuard(OptimConfig(), g.state())  # restored from a checkpoint
    assert g2.skipped == 3 and g2.mean == g.mean


def nan_cut(tmp_path):
    """A cut whose audio holds NaN samples (a broken file): its loss and gradients are NaN."""
    audio, text = speech("activated")
    audio = audio.copy()
    audio[1000:1100] = np.nan
    sf.write(tmp_path / "nan.wav", audio, 16000, subtype="FLOAT")
    cut = Recording.from_file(tmp_path / "nan.wav", recording_id="nan").to_cut()
    cut.id = "nan"
    sup = SupervisionSegment(id="nan", recording_id="nan", start=0, duration=cut.duration, text=text,
                             language="en", speaker="allison", gender="female")  # fmt: skip
    cut.supervisions = [sup]
    from osum_data.template.builder import template

    return template(cut, task="asr")


def test_non_finite_updates_are_skipped_counted_and_logged(tmp_path):
    from training.checkpoint import checkpoint_dirs

    manifest = tmp_path / "cuts.jsonl.gz"
    CutSet.from_cuts([*demo_task_cuts(3, max_duration=3.6), nan_cut(tmp_path)]).to_file(manifest)
    common = ["optim.max_steps=2", "data.max_duration=60", "data.bucketing=false", "optim.warmup_steps=0"]
    train(load_config(TINY, common), [str(manifest)], tmp_path / "guarded")
    log = records(tmp_path / "guarded")
    assert [r["skipped_steps"] for r in log] == [1, 2] and all(math.isnan(r["grad_norm"]) for r in log)
    weights = torch.load(checkpoint_dirs(tmp_path / "guarded")[-1] / "model.pt", weights_only=True)
    assert all(torch.isfinite(w).all() for w in weights.values())
    # Without the guard the same run destroys the model.
    train(load_config(TINY, common + ["optim.skip_nonfinite=false"]), [str(manifest)], tmp_path / "raw")
    weights = torch.load(checkpoint_dirs(tmp_path / "raw")[-1] / "model.pt", weights_only=True)
    assert any(not torch.isfinite(w).all() for w in weights.values())


def test_generation_metrics_tensorboard_and_peak_memory_during_training(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    manifest = tmp_path / "cuts.jsonl.gz"
    demo_task_cuts(6, tasks=("asr", "sgc"), max_duration=3.6).to_file(manifest)
    dev = tmp_path / "dev.jsonl.gz"
    demo_task_cuts(6, tasks=("asr", "sgc"), max_duration=3.6, offset=6).to_file(dev)
    overrides = ["optim.max_steps=2", "data.max_duration=20", "train.eval_every=2",
                 "train.eval_decode_cuts=4", "decode.max_new_tokens=8"]  # fmt: skip
    train(load_config(TINY, overrides), [str(manifest)], tmp_path / "run", dev_spec=str(dev))
    log = records(tmp_path / "run")
    ev = next(r for r in log if "dev_gen" in r)
    assert ev["step"] == 2 and ev["dev_gen_cuts"] == 4
    gen = ev["dev_gen"]
    assert set(gen) == {"<TRANSCRIBE>", "<TRANSCRIBE> <GENDER>"}
    assert {"wer", "cer"} <= set(gen["<TRANSCRIBE>"])
    assert {"label_accuracy", "majority_baseline", "majority_labels"} <= set(gen["<TRANSCRIBE> <GENDER>"])
    hyps = [
        json.loads(x) for x in (tmp_path / "run" / "eval" / "step-0000002.jsonl").read_text().splitlines()
    ]
    assert len(hyps) == 4 and {"id", "task", "ref", "hyp"} <= set(hyps[0])
    assert all(r["peak_rss_gib"] > 0.1 for r in log if "loss" in r)
    # TensorBoard holds the same scalars, nested keys flattened.
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss", "lr", "grad_norm", "peak_rss_gib", "dev_loss", "loss_by_task/<TRANSCRIBE>"} <= tags
    assert "dev_gen/<TRANSCRIBE> <GENDER>/majority_baseline" in tags
    assert [e.step for e in acc.Scalars("loss")] == [1, 2]
    assert acc.Scalars("loss")[-1].value == pytest.approx(log[1]["loss"], rel=1e-6)


def test_decoding_options_and_several_stop_tokens():
    """OSUM's decoding (beam 4 with top-p/top-k sampling and a repetition penalty) through
    transformers' generate, reproducible by seed; generation stops at any of the stop tokens."""
    from training.data import SpeechLLMDataset
    from training.model import build_model
    from training.sequence import PromptFormat
    from training.stream import Position

    cfg = load_config(TINY)
    model, tok = build_model(cfg)
    model.eval()
    fmt = PromptFormat(tok)
    cuts = demo_task_cuts(2, max_duration=3.6)
    batch = SpeechLLMDataset(fmt, cfg.data, seed=0, train=False, with_targets=False)[
        (Position(0, 1, 1), cuts)
    ]
    greedy = model.generate(batch, DecodeConfig(max_new_tokens=6), [fmt.eos_id], fmt.pad_id)
    assert all(len(r) == 6 for r in greedy)
    first = greedy[0][0]
    # A second stop token (an instruct model's end of turn, say) ends the row right there.
    stopped = model.generate(batch, DecodeConfig(max_new_tokens=6), [fmt.eos_id, first], fmt.pad_id)
    assert stopped[0] == [] and (stopped[1] == greedy[1] or first in greedy[1])
    osum = DecodeConfig(
        max_new_tokens=6, num_beams=4, do_sample=True, top_p=0.9, top_k=5, repetition_penalty=1.05
    )
    runs = []
    for _ in range(2):
        torch.manual_seed(osum.seed)
        runs.append(model.generate(batch, osum, [fmt.eos_id], fmt.pad_id))
    assert runs[0] == runs[1] and all(len(r) <= 6 for r in runs[0])
    assert fmt.stop_ids(["<|im_end|>", "<|endoftext|>"]) == [
        fmt.eos_id,
        tok.convert_tokens_to_ids("<|endoftext|>"),
    ]
    with pytest.raises(ValueError, match="decode.stop_tokens"):
        fmt.stop_ids(["not one token at all"])


def test_wandb_is_used_only_when_configured(tmp_path, monkeypatch, capsys):
    import importlib.util

    from training.logs import RunLog

    (tmp_path / "a").mkdir()
    log = RunLog(tmp_path / "a", True, 0, tensorboard=False)
    log({"step": 1, "loss": 1.0})
    log.close()
    assert "W&B" not in capsys.readouterr().out
    (tmp_path / "b").mkdir()
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(ImportError, match="pip install wandb"):
            RunLog(tmp_path / "b", True, 0, tensorboard=False, wandb_project="osum")
    else:  # installed: an offline run writes its files locally
        monkeypatch.setenv("WANDB_MODE", "offline")
        log = RunLog(tmp_path / "b", True, 0, tensorboard=False, wandb_project="osum")
        log({"step": 1, "loss": 1.0, "loss_by_task": {"<TRANSCRIBE>": 1.0}})
        log.close()
        assert list((tmp_path / "b").glob("wandb/*"))
