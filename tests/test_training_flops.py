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

from osum_data.demo.task_cuts import demo_task_cuts  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from training.config import load_config  # noqa: E402
from training.data import SpeechLLMDataset  # noqa: E402
from training.flops import peak_flops, step_flops  # noqa: E402
from training.model import build_model, speech_boundary_tokens  # noqa: E402
from training.sequence import PromptFormat  # noqa: E402
from training.stream import Position  # noqa: E402

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
    # Hard padded caps (issue 18): every batch fits, the cut that crosses the cap included.
    for b in batches:
        assert len(b["mel_lens"]) * int(b["mel_lens"].max()) <= cfg.data.max_duration * 100


def test_benchmark_script_runs_its_gpu_code_path_on_cpu(capsys):
    assert load_bench().main(["--tiny-cpu", "--steps", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "NCCL check skipped: no CUDA device (CPU run)" in out
    for ckpt in ("False", "True"):
        for scale in ("1", "3"):
            assert f"grad_ckpt={ckpt:5} durations x{scale}:" in out, out
    assert "useful FLOPs by part: encoder" in out and "padding audio" in out and "MFU n/a" in out


def test_synthetic_lengths_follow_the_demo_and_batch_under_the_hard_caps():
    import numpy as np

    bench = load_bench()
    items = bench.synthetic_lengths(4000, seed=0)
    frames = np.array([f for f, _ in items]) / 100
    demo = np.array([d for d, _ in bench.DEMO_LENGTHS])
    for q in (0.1, 0.5, 0.9):
        assert abs(np.quantile(frames, q) - np.quantile(demo, q)) < 0.2 * np.quantile(demo, 0.9), q
    tripled = bench.synthetic_lengths(4000, seed=0, scale=3.0)
    assert np.median([f for f, _ in tripled]) == 3 * np.median([f for f, _ in items])
    batches, skipped = bench.bucket_batches(tripled, 3900, 1900, prompt=30, boundary=2)
    assert skipped == 0 and sum(map(len, batches)) == 4000
    for b in batches:
        seqs = [30 + int(bench.speech_lengths(f, 2)) + t + 1 for f, t in b]
        assert len(b) * max(f for f, _ in b) <= 3900 and len(b) * max(seqs) <= 1900
    assert np.mean([len(b) * max(f for f, _ in b) for b in batches]) > 0.8 * 3900  # full batches
    # MFU arithmetic: the useful FLOPs of a synthetic batch are those training/flops.py counts.
    cfg = load_config(TINY, ["model.adapter.type=osum", "model.adapter.heads=4", "model.adapter.ffn_dim=160"])
    model, _ = build_model(cfg)
    g = torch.Generator().manual_seed(0)
    batch = bench.tensors(batches[0], 30, 1000, 80, 2, g)
    work = step_flops(model, batch)
    tokens = int(batch["attention_mask"].sum())
    assert tokens == sum(30 + int(bench.speech_lengths(f, 2)) + t + 1 for f, t in batches[0])
    assert work.total > 0 and set(work.by_part) == {"encoder", "adapter", "llm", "lm_head"}


def test_the_gpu_benchmark_runs_without_lhotse():
    """The GPU machine has torch and transformers but not lhotse: the synthetic mode must not
    import it (lhotse is made unimportable in a child interpreter)."""
    import subprocess
    import sys

    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('lhotse', 'osum_data.tasks'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "sys.argv = ['train_gpu.py', '--tiny-cpu', '--steps', '1', '--warmup', '0', '--scales', '1',\n"
        "            '--grad-ckpt', 'off']\n"
        f"path = {str(REPO / 'bench/train_gpu.py')!r}\n"
        "exec(compile(open(path).read(), path, 'exec'), {'__file__': path, '__name__': '__main__'})\n"
    )
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd="/", env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "grad_ckpt=False durations x1:" in proc.stdout and "lhotse" not in proc.stderr
