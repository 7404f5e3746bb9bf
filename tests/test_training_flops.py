"""Bug 5 of issue 10: the GPU benchmark's MFU. Useful FLOPs are counted per weight and part (a
frozen encoder costs 2N, not 6N), checked against PyTorch's FlopCounterMode on the real step; the
peak comes from a table where an H100 NVL is not an SXM part; utterance lengths are drawn from the
demo manifest's distribution, not all alike. The GPU figures themselves need a GPU."""

from __future__ import annotations

import importlib.util
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count  # noqa: E402

from tests.conftest import REPO  # noqa: E402
from training.config import load_config  # noqa: E402
from training.data import Position, SpeechLLMDataset  # noqa: E402
from training.demo import demo_task_cuts  # noqa: E402
from training.flops import peak_flops, step_flops  # noqa: E402
from training.model import build_model, speech_boundary_tokens  # noqa: E402
from training.sequence import PromptFormat  # noqa: E402

TINY = REPO / "training" / "configs" / "tiny.yaml"
aten = torch.ops.aten


def _fwd(q, k, v, *args, **kwargs):
    return sdpa_flop_count(q, k, v)


def _bwd(grad, q, k, v, *args, **kwargs):
    return 2 * sdpa_flop_count(q, k, v)  # useful work: dQ, dK, dV, dP (no recomputed scores)


# CPU's fused attention kernel is not in FlopCounterMode's table: count it as attention.
CPU_ATTENTION = {aten._scaled_dot_product_flash_attention_for_cpu: _fwd,
                 aten._scaled_dot_product_flash_attention_for_cpu_backward: _bwd}  # fmt: skip


def measured_and_counted(overrides: list[str]) -> tuple[float, dict[str, float]]:
    cfg = load_config(TINY, overrides + ["model.llm.attn_implementation=eager"])
    model, tok = build_model(cfg)
    model.train()
    ds = SpeechLLMDataset(PromptFormat(tok), cfg.data, seed=0, boundary_tokens=speech_boundary_tokens(cfg))
    batch = ds[(Position(0, 1, 1), demo_task_cuts(1, tasks=("sgc",)))]
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
        model(batch)["loss"].backward()
    return counter.get_total_flops(), step_flops(model, batch, causal_half=False).by_part


@pytest.mark.parametrize(
    "overrides",
    [
        ["model.train=[adapter,encoder,lora]"],
        ["model.train=[adapter,lora]"],
        ["model.train=[adapter]"],
        ["model.train=[adapter,encoder,lora]", "model.adapter.type=osum"],
    ],  # fmt: skip
)
def test_counted_flops_equal_what_the_step_executes(overrides):
    measured, counted = measured_and_counted(overrides)
    assert sum(counted.values()) == pytest.approx(measured, rel=1e-6)


def test_a_frozen_encoder_costs_a_third_of_a_trained_one():
    _, trained = measured_and_counted(["model.train=[adapter,encoder,lora]"])
    _, frozen = measured_and_counted(["model.train=[adapter,lora]"])
    # 2N vs 6N (conv1's input, the mel, never needs a gradient: a little under 3x)
    assert 2.7 < trained["encoder"] / frozen["encoder"] <= 3.0
    assert frozen["llm"] == trained["llm"]  # gradients flow through the LLM either way


def test_peak_table_tells_gpu_variants_apart():
    assert peak_flops("NVIDIA H100 NVL") == (835e12, "H100 NVL")
    assert peak_flops("NVIDIA H100 80GB HBM3") == (989e12, "H100 SXM5")
    assert peak_flops("NVIDIA H100 PCIe") == (756e12, "H100 PCIe")
    assert peak_flops("NVIDIA H200") == (989e12, "H200 SXM")
    assert peak_flops("NVIDIA H200 NVL")[1] == "H200 NVL"
    assert peak_flops("NVIDIA GH200 480GB")[1] == "GH200"
    assert peak_flops("NVIDIA A100-SXM4-80GB") == (312e12, "A100")
    assert peak_flops("NVIDIA L40S")[1] == "L40S" and peak_flops("NVIDIA L4")[1] == "L4"
    assert peak_flops("Some Future GPU") is None


def load_bench():
    spec = importlib.util.spec_from_file_location("train_gpu", REPO / "bench" / "train_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_lengths_follow_the_demo_distribution_and_pad_like_training():
    import numpy as np

    bench = load_bench()
    lengths = bench.demo_lengths(None)
    src = np.array([d for d, _ in lengths])
    assert len(lengths) > 100 and src.std() > 0.5  # real prompts of many lengths
    cuts = bench.draw_cuts(lengths, 2000, seed=0)
    drawn = np.array([c.duration for c in cuts])
    for q in (0.1, 0.5, 0.9):
        assert abs(np.quantile(drawn, q) - np.quantile(src, q)) < 0.15 * np.quantile(src, 0.9), q
    cfg = load_config(
        REPO / "training/configs/osum_qwen2_7b.yaml", ["data.num_buckets=4", "data.buffer_size=2000"]
    )
    batches = bench.make_batches(bench.draw_cuts(lengths, 200, seed=1), cfg, 30, 1000, 80, 2)
    assert sum(len(b["mel_lens"]) for b in batches) == 200
    uneven = [b for b in batches if len(set(b["mel_lens"].tolist())) > 1]
    assert uneven and all(b["padded_frames"] >= b["mel_lens"].sum() for b in batches)
    # Lhotse closes a batch with the cut that reaches max_duration: without it, every batch fits.
    for b in batches:
        head = b["mel_lens"][:-1]
        assert len(head) == 0 or len(head) * int(head.max()) <= cfg.data.max_duration * 100


def test_benchmark_script_runs_its_gpu_code_path_on_cpu(capsys):
    assert load_bench().main(["--tiny-cpu", "--steps", "2", "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    assert "useful FLOPs by part: encoder" in out and "padding: audio" in out
