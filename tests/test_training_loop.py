"""The training loop on real speech: overfitting, decoding + metrics, LoRA-merged export, resume."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from lhotse import CutSet  # noqa: E402

from osum_data.demo.task_cuts import demo_task_cuts  # noqa: E402
from osum_data.errors import UsageError  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from training.checkpoint import checkpoint_dirs, position_from_dict  # noqa: E402
from training.config import load_config  # noqa: E402
from training.decode import decode  # noqa: E402
from training.decode import main as decode_main  # noqa: E402
from training.export import export  # noqa: E402
from training.safe_load import safe_load  # noqa: E402
from training.train import train  # noqa: E402

TINY = REPO / "training" / "configs" / "tiny.yaml"
INSTRUCTION = "Write down what is said, and the speaker's gender when asked."


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if '"loss"' in line]


def sixteen_samples(path: Path) -> Path:
    """16 real demo utterances (0.5-3.6 s), ASR and ASR+gender alternating, all with one and the
    same instruction: only the audio tells the samples apart, so overfitting proves the speech
    path carries information (a per-cut instruction would let the LLM memorise the prompt)."""
    cuts = []
    for cut in demo_task_cuts(16, tasks=("asr", "sgc"), max_duration=3.6):
        cut.custom["instruction"] = INSTRUCTION
        cuts.append(cut)
    CutSet.from_cuts(cuts).to_file(path)
    return path


@pytest.fixture(scope="module")
def overfit_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("overfit")
    manifest = sixteen_samples(root / "cuts.jsonl.gz")
    overrides = [
        "data.bucketing=false",  # all 16 in one batch
        "data.max_duration=60",
        "optim.max_steps=150",
        "train.log_every=1",
        "train.save_every=1000",
    ]
    cfg = load_config(TINY, overrides)
    train(cfg, [str(manifest)], root / "run")
    return root, manifest, overrides


@pytest.mark.slow
def test_overfit_16_samples_then_decode_them(overfit_run):
    root, manifest, overrides = overfit_run
    log = read_log(root / "run" / "train_log.jsonl")
    assert [r["step"] for r in log] == list(range(1, 151))
    first, last = log[0]["loss"], log[-1]["loss"]
    assert last < first / 2, (first, last)
    assert set(log[-1]["loss_by_task"]) == {"<TRANSCRIBE>", "<TRANSCRIBE> <GENDER>"}
    for key in ("tokens_per_s", "audio_s_per_s", "pad_ratio_audio", "pad_ratio_tokens", "lr", "grad_norm"):
        assert key in log[-1]
    print(f"overfit loss {first:.3f} -> {last:.3f}")
    # Decoding the same samples through the CLI entry point.
    args = ["--config", str(TINY), "--checkpoint", str(root / "run"), "--cuts", str(manifest)]
    args += ["--output", str(root / "dec")] + [x for o in overrides for x in ("--set", o)]
    assert decode_main(args) == 0
    metrics = json.loads((root / "dec" / "metrics.json").read_text())
    hyps = [json.loads(line) for line in (root / "dec" / "hyps.jsonl").read_text().splitlines()]
    assert len(hyps) == 16
    print("decode metrics", json.dumps(metrics))
    assert metrics["<TRANSCRIBE>"]["cer"] < 0.3
    assert metrics["<TRANSCRIBE> <GENDER>"]["cer"] < 0.3
    assert metrics["<TRANSCRIBE> <GENDER>"]["label_accuracy"] >= 0.5


@pytest.mark.slow
def test_lora_merged_export_decodes_the_same(overfit_run):
    root, manifest, overrides = overfit_run
    cfg = load_config(TINY, overrides)
    export(TINY, root / "run", root / "export", overrides)
    exported = load_config(root / "export" / "config.yaml")
    assert exported.model.lora is None and Path(exported.model.llm.path).is_dir()
    # The merged LLM is a plain HF model: no peft adapter files.
    assert not (root / "export" / "llm" / "adapter_config.json").exists()
    a = decode(cfg, root / "run", str(manifest), root / "dec_ckpt")
    b = decode(exported, root / "export", str(manifest), root / "dec_export")
    hyps_a = (root / "dec_ckpt" / "hyps.jsonl").read_text().splitlines()
    hyps_b = (root / "dec_export" / "hyps.jsonl").read_text().splitlines()
    same = sum(x == y for x, y in zip(hyps_a, hyps_b, strict=True))
    assert same >= 15, (a, b)  # merging W + BA reorders float sums; greedy output stays put


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(tmp_path):
    manifest = tmp_path / "cuts.jsonl.gz"
    demo_task_cuts(24, tasks=("asr", "sgc"), max_duration=3.6).to_file(manifest)
    overrides = [
        "data.max_duration=12",
        "data.num_buckets=2",
        "data.num_workers=1",  # batches are prefetched: the checkpoint must not follow the sampler
        "data.instruction=pool",
        "data.spec_augment={}",
        "model.adapter.dropout=0.1",
        "model.lora.dropout=0.1",
        "optim.grad_accum=2",
        "optim.max_steps=6",
        "optim.warmup_steps=2",
        "train.log_every=1",
        "train.save_every=100",
    ]
    cfg = load_config(TINY, overrides + ["train.eval_every=3"])
    dev = tmp_path / "dev.jsonl.gz"
    demo_task_cuts(6, tasks=("asr", "sgc"), max_duration=3.6, offset=24).to_file(dev)
    train(cfg, [str(manifest)], tmp_path / "full", dev_spec=str(dev))
    train(cfg, [str(manifest)], tmp_path / "cut", dev_spec=str(dev), stop_after_steps=2)
    assert [p.name for p in checkpoint_dirs(tmp_path / "cut")] == ["step-0000002"]
    train(cfg, [str(manifest)], tmp_path / "cut", dev_spec=str(dev), resume=True, stop_after_steps=2)
    # A run killed after logging step 5 but before its next checkpoint: step 5 is redone once.
    with open(tmp_path / "cut" / "train_log.jsonl", "a") as f:
        f.write(json.dumps({"step": 5, "loss": -1.0}) + "\n")
    with pytest.raises(UsageError, match="--resume"):
        train(cfg, [str(manifest)], tmp_path / "cut", dev_spec=str(dev))
    train(cfg, [str(manifest)], tmp_path / "cut", dev_spec=str(dev), resume=True)
    # The dev evaluations (steps 3 and 6) ran in both and did not disturb training.
    for run in ("full", "cut"):
        evals = [
            json.loads(x)
            for x in (tmp_path / run / "train_log.jsonl").read_text().splitlines()
            if "dev_loss" in x
        ]
        assert [e["step"] for e in evals] == [3, 6] and all(e["dev_cuts"] == 6 for e in evals)
        assert set(evals[0]["dev_loss_by_task"]) == {"<TRANSCRIBE>", "<TRANSCRIBE> <GENDER>"}
    full = read_log(tmp_path / "full" / "train_log.jsonl")
    cut = read_log(tmp_path / "cut" / "train_log.jsonl")
    assert [r["step"] for r in cut] == [r["step"] for r in full] == list(range(1, 7))
    assert max(r["epoch"] for r in full) >= 1  # the run crosses an epoch boundary
    for a, b in zip(full, cut, strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-6, (a["step"], a["loss"], b["loss"])
        assert a["lr"] == b["lr"] and a["cuts"] == b["cuts"]
        assert a["loss_by_task"].keys() == b["loss_by_task"].keys()
    assert len({r["loss"] for r in full}) == 6  # the losses do move (a trivially constant run proves nothing)
    assert [p.name for p in checkpoint_dirs(tmp_path / "cut")] == ["step-0000004", "step-0000006"]


def test_staged_training_starts_from_the_previous_stage(tmp_path):
    """OSUM trains in stages: adapter only, then more parts, from the adapter stage's weights."""
    import torch

    manifest = tmp_path / "cuts.jsonl.gz"
    demo_task_cuts(4, max_duration=3.6).to_file(manifest)
    common = ["optim.max_steps=2", "data.max_duration=20"]
    train(load_config(TINY, common + ["model.train=[adapter]"]), [str(manifest)], tmp_path / "stage1")
    stage1 = torch.load(checkpoint_dirs(tmp_path / "stage1")[-1] / "model.pt", weights_only=True)
    assert stage1 and all(k.startswith("adapter.") for k in stage1)
    # Stage 2 at lr 0: its weights stay where stage 1 left them, now with encoder and LoRA training.
    init = f"model.init_from={checkpoint_dirs(tmp_path / 'stage1')[-1]}"
    train(load_config(TINY, common + [init, "optim.lr=0"]), [str(manifest)], tmp_path / "stage2")
    stage2 = torch.load(checkpoint_dirs(tmp_path / "stage2")[-1] / "model.pt", weights_only=True)
    for k, v in stage1.items():
        torch.testing.assert_close(stage2[k], v)
    assert any("lora_" in k for k in stage2) and "encoder.conv1.weight" in stage2


def test_evaluation_and_decoding_skip_long_cuts_of_a_small_dev_set(tmp_path):
    """Bugs 3 and 4 of issue 10 end to end: a 3-cut dev set (fewer than the 4 buckets) with one cut
    over 30 s evaluates during training and decodes; the long cut is counted and listed."""
    from tests.test_training_data import long_task_cut

    manifest = tmp_path / "cuts.jsonl.gz"
    demo_task_cuts(4, max_duration=3.6).to_file(manifest)
    dev = tmp_path / "dev.jsonl.gz"
    CutSet.from_cuts(list(demo_task_cuts(2, offset=4, max_duration=3.6)) + [long_task_cut(tmp_path)]).to_file(
        dev
    )
    cfg = load_config(TINY, ["optim.max_steps=1", "data.max_duration=20", "train.eval_every=1"])
    train(cfg, [str(manifest)], tmp_path / "run", dev_spec=str(dev))
    evals = [
        json.loads(x)
        for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()
        if "dev_loss" in x
    ]
    assert evals[0]["dev_cuts"] == 2 and evals[0]["dev_skipped"] == {"too_long": 1}
    decode(cfg, tmp_path / "run", str(dev), tmp_path / "dec")
    assert len((tmp_path / "dec" / "hyps.jsonl").read_text().splitlines()) == 2
    skipped = [json.loads(x) for x in (tmp_path / "dec" / "skipped.jsonl").read_text().splitlines()]
    assert [s["id"] for s in skipped] == ["long_31s"] and "longer than 30 s" in skipped[0]["reason"]


def test_a_fresh_start_replaces_the_log_of_a_run_that_died_before_its_first_checkpoint(tmp_path):
    """Bug 6 of issue 10: the new run's records were appended to the dead run's."""
    manifest = tmp_path / "cuts.jsonl.gz"
    demo_task_cuts(4, max_duration=3.6).to_file(manifest)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "train_log.jsonl").write_text(json.dumps({"step": 1, "loss": 99.0}) + "\n")
    (tmp_path / "run" / "cut_ids.rank0.jsonl").write_text(json.dumps({"step": 7, "ids": ["x"]}) + "\n")
    cfg = load_config(TINY, ["optim.max_steps=2", "data.max_duration=20", "train.log_cut_ids=true"])
    train(cfg, [str(manifest)], tmp_path / "run")
    log = read_log(tmp_path / "run" / "train_log.jsonl")
    assert [r["step"] for r in log] == [1, 2] and all(r["loss"] != 99.0 for r in log)
    ids = [json.loads(x) for x in (tmp_path / "run" / "cut_ids.rank0.jsonl").read_text().splitlines()]
    assert [r["step"] for r in ids] == [1, 2]


def test_batches_for_a_gpu_are_pinned(tmp_path):
    """Bug 6 of issue 10: `non_blocking=True` copies from pageable memory are synchronous."""
    import torch

    from training.distributed import Dist
    from training.sequence import PromptFormat
    from training.stream import Position
    from training.train import build_loaders
    from training.weights import load_tokenizer

    manifest = tmp_path / "cuts.jsonl.gz"
    demo_task_cuts(4, max_duration=3.6).to_file(manifest)
    cfg = load_config(TINY, ["train.eval_decode_cuts=2"])
    fmt = PromptFormat(load_tokenizer(cfg.model.llm.tokenizer))
    for device, pinned in (("cuda", True), ("cpu", False)):
        d = Dist(device=torch.device(device))
        loaders = build_loaders(cfg, fmt, [str(manifest)], None, str(manifest), d, Position(0, 0, 0))
        assert [ld.pin_memory for ld in loaders] == [pinned, pinned, pinned]


def test_fast_resume_starts_at_the_saved_input_position_without_replay(tmp_path):
    """train.resume_data=fast: the input restarts at the stream position of the checkpoint (the
    manifest lines before it are skipped undecoded), so no cut is seen twice in the epoch and
    every cut the resumed run trains on lies at or after that position."""

    manifest = tmp_path / "cuts.jsonl.gz"
    cuts = demo_task_cuts(40, tasks=("asr", "sgc"), max_duration=3.6)
    cuts.to_file(manifest)
    order = {c.id: i for i, c in enumerate(cuts)}
    overrides = ["data.max_duration=6", "data.buffer_size=8", "data.num_buckets=2", "train.log_cut_ids=true",
                 "train.resume_data=fast", "optim.max_steps=6", "train.log_every=1"]  # fmt: skip
    cfg = load_config(TINY, overrides)
    train(cfg, [str(manifest)], tmp_path / "run", stop_after_steps=3)
    saved = position_from_dict(safe_load(checkpoint_dirs(tmp_path / "run")[-1] / "rank-0.pt")["position"])
    assert saved.epoch == 0 and 0 < saved.stream.sources[0][1] < 40
    train(cfg, [str(manifest)], tmp_path / "run", resume=True)
    assert [r["step"] for r in read_log(tmp_path / "run" / "train_log.jsonl")] == list(range(1, 7))
    ids = [json.loads(x) for x in (tmp_path / "run" / "cut_ids.rank0.jsonl").read_text().splitlines()]
    assert [r["step"] for r in ids] == list(range(1, 7))
    epoch0 = [i for r in ids if r["epoch"] == 0 for i in r["ids"]]
    assert len(epoch0) == len(set(epoch0))  # nothing twice within the epoch
    resumed = [i for r in ids if r["step"] > 3 and r["epoch"] == 0 for i in r["ids"]]
    assert resumed and min(order[i] for i in resumed) >= saved.stream.sources[0][1]
