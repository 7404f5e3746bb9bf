"""OSUM's released checkpoint (`infer.pt` of ASLP-lab/OSUM) -> this trainer's weights.

    python -m training.osum_checkpoint --osum infer.pt --output models/osum-init \
        [--llm models/Qwen2-7B-Instruct]
    osum-train --config training/configs/osum_qwen2_7b.yaml --set model.init_from=models/osum-init ...

OSUM saves `LLMASR_Model.state_dict()` (WeNet): the Whisper-medium encoder in WeNet's layout, the
adapter (`down_sample_2`, `speech_transformer`, `speech_llama_proj`), the speech boundary
embeddings (`speech_token_emded`), and the peft-wrapped Qwen2 (`llama_model.base_model.model.*`,
base weights plus LoRA A/B). The converter writes OUT/model.pt keyed by this trainer's parameter
names (encoder, adapter of `model.adapter.type: osum`, LoRA), which `model.init_from` loads, and
OUT/conversion.json saying what went where and what was left out:

- the LLM's base weights: OSUM trains LoRA on a frozen Qwen2, so they are the public Qwen2-7B(-Instruct)
  weights that `model.llm.path` loads (set `--keep-llm` to keep them in model.pt anyway);
- `ln_speech` (built but not used in OSUM's forward), `speaker_head` and the speech-token rows of
  `speech_token_emded` (speech-token output, not used for text), the adapter's positional table
  `speech_transformer.embed.pos_enc.pe` (computed; checked against ours).
A key the mapping does not know is an error naming it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from osum_data.errors import UsageError
from training.adapters import sinusoids
from training.cli_errors import run_command
from training.safe_load import safe_load

# (OSUM key pattern, our key template); the first match wins.
_ENCODER_LAYER = {
    "self_attn.linear_q": "self_attn.q_proj",
    "self_attn.linear_k": "self_attn.k_proj",
    "self_attn.linear_v": "self_attn.v_proj",
    "self_attn.linear_out": "self_attn.out_proj",
    "norm1": "self_attn_layer_norm",
    "norm2": "final_layer_norm",
    "feed_forward.w_1": "fc1",
    "feed_forward.w_2": "fc2",
}
RULES: list[tuple[re.Pattern, str]] = [
    (re.compile(r"encoder\.embed\.conv\.0\.(weight|bias)"), r"encoder.conv1.\1"),
    (re.compile(r"encoder\.embed\.conv\.2\.(weight|bias)"), r"encoder.conv2.\1"),
    (re.compile(r"encoder\.after_norm\.(weight|bias)"), r"encoder.layer_norm.\1"),
    *[
        (
            re.compile(rf"encoder\.encoders\.(\d+)\.{re.escape(k)}\.(weight|bias)"),
            rf"encoder.layers.\1.{v}.\2",
        )
        for k, v in _ENCODER_LAYER.items()
    ],
    (re.compile(r"down_sample_2\.conv\.1\.(weight|bias)"), r"adapter.convs.0.\1"),
    (re.compile(r"down_sample_2\.conv\.4\.(weight|bias)"), r"adapter.convs.1.\1"),
    (re.compile(r"down_sample_2\.conv\.7\.(weight|bias)"), r"adapter.convs.2.\1"),
    (
        re.compile(r"speech_transformer\.embed\.out\.([01])\.(weight|bias)"),
        r"adapter.speech_transformer.embed.\1.\2",
    ),
    (re.compile(r"speech_transformer\.(encoders\..+|after_norm\..+)"), r"adapter.speech_transformer.\1"),
    (re.compile(r"speech_llama_proj\.(weight|bias)"), r"adapter.speech_llama_proj.\1"),
    (re.compile(r"llama_model\.(base_model\.model\..+\.lora_[AB]\.default\.weight)"), r"llm.\1"),
]
LLM_BASE = re.compile(r"llama_model\.base_model\.model\.(.+)")
UNUSED = {
    "ln_speech.weight": "built but unused in OSUM's forward",
    "ln_speech.bias": "built but unused in OSUM's forward",
    "speaker_head.weight": "speech-token output head, not used for text",
    "speaker_head.bias": "speech-token output head, not used for text",
}


def table_tolerance(dtype: torch.dtype) -> float:
    """How far a stored sinusoid table may be from ours and still be the same table: rounding to
    the saved dtype moves a value in [-1, 1] by up to half a unit in the last place (bf16 2^-9 =
    0.00195, fp16 2^-12 at most, more where sin/cos of large positions were computed in half
    precision), so 4 machine epsilons of the dtype (bf16 0.031, fp16 0.0039), never below 1e-4
    (fp32: the two computations differ in the last bits). A different table (another base, sin
    and cos swapped, another interleaving) is off by ~1."""
    eps = torch.finfo(dtype).eps if dtype.is_floating_point else 0.0
    return max(1e-4, 4 * eps)


def convert(
    osum: dict[str, torch.Tensor], keep_llm: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(our state dict, report) from an OSUM state dict."""
    out: dict[str, torch.Tensor] = {}
    report: dict[str, Any] = {"mapped": {}, "left_out": {}}
    unknown = []
    for key, value in osum.items():
        if key == "encoder.embed.pos_enc.pe":
            out["encoder.embed_positions.weight"] = value.reshape(value.shape[-2], value.shape[-1])
            report["mapped"][key] = "encoder.embed_positions.weight"
            continue
        if key == "speech_transformer.embed.pos_enc.pe":
            table = value.reshape(value.shape[-2], value.shape[-1])
            atol = table_tolerance(table.dtype)
            diff = float((table.float() - sinusoids(*table.shape)).abs().max())
            if not diff <= atol:
                raise ValueError(
                    f"{key}: OSUM's positional table differs from the osum adapter's sinusoids by "
                    f"{diff:.3g} (tolerance for {str(table.dtype).removeprefix('torch.')}: {atol:.3g})"
                )
            report["left_out"][key] = "sinusoidal positions, computed by the osum adapter (checked equal)"
            continue
        if key == "speech_token_emded.weight":
            n = value.shape[0] - 2  # OSUM's speech_token_num: begin and end of speech are rows n, n + 1
            out["adapter.speech_bos"], out["adapter.speech_eos"] = value[n].clone(), value[n + 1].clone()
            report["mapped"][key] = f"rows {n}, {n + 1} -> adapter.speech_bos, adapter.speech_eos"
            if n:
                report["left_out"][f"{key}[0:{n}]"] = "speech-token embeddings, not used for text"
            continue
        if key in UNUSED:
            report["left_out"][key] = UNUSED[key]
            continue
        for pattern, template in RULES:
            if pattern.fullmatch(key):
                out[pattern.sub(template, key)] = value
                report["mapped"][key] = pattern.sub(template, key)
                break
        else:
            base = LLM_BASE.fullmatch(key)
            if base is None:
                unknown.append(key)
            elif keep_llm:
                ours = "llm.base_model.model." + base.group(1)
                out[ours] = value
                report["mapped"][key] = ours
            else:
                report["left_out"][key] = "frozen LLM base weight: loaded from model.llm.path"
    if unknown:
        raise ValueError(
            f"OSUM checkpoint keys the converter does not know: {unknown[:10]} ({len(unknown)} in all)"
        )
    parts = Counter(k.split(".")[0] for k in out)
    lora = sum(1 for k in out if ".lora_" in k)
    report["summary"] = {"tensors": len(out), "by_part": dict(parts), "lora_tensors": lora,
                         "left_out": len(report["left_out"])}  # fmt: skip
    return out, report


def load_osum_state(path: Path) -> dict[str, torch.Tensor]:
    """OSUM's `infer.pt` (a plain state dict; DeepSpeed-era saves may wrap it in `module`)."""
    sd = safe_load(path)
    if isinstance(sd, dict) and "module" in sd and isinstance(sd["module"], dict):
        sd = sd["module"]
    if not isinstance(sd, dict) or not any(k.startswith("speech_transformer.") for k in sd):
        raise UsageError(f"{path}: not an OSUM checkpoint (no speech_transformer.* keys)")
    return sd


def check_llm(osum: dict[str, torch.Tensor], llm_dir: Path) -> dict[str, Any]:
    """Whether OSUM's frozen LLM is the one in `llm_dir` (a local HF directory): compares the token
    embeddings, which differ between Qwen2-7B and Qwen2-7B-Instruct. LoRA trained on one base is
    wrong on another."""
    from safetensors import safe_open

    key = "model.embed_tokens.weight"
    theirs = osum.get(f"llama_model.base_model.model.{key}")
    if theirs is None:
        return {"llm": str(llm_dir), "result": "OSUM checkpoint holds no LLM embeddings to compare"}
    files = sorted(Path(llm_dir).glob("*.safetensors"))
    for f in files:
        with safe_open(f, "pt") as st:
            if key in st.keys():
                ours = st.get_tensor(key)
                if ours.shape != theirs.shape:
                    return {
                        "llm": str(llm_dir),
                        "result": f"differs: shape {tuple(ours.shape)} vs {tuple(theirs.shape)}",
                    }
                diff = float((ours.float() - theirs.float()).abs().max())
                return {
                    "llm": str(llm_dir),
                    "result": "equal" if diff == 0 else f"differs (max abs diff {diff:.3g})",
                }
    raise FileNotFoundError(f"{llm_dir}: no {key} in its *.safetensors files")


def write(
    osum_path: Path, output: Path, keep_llm: bool = False, llm_dir: Path | None = None
) -> dict[str, Any]:
    osum = load_osum_state(osum_path)
    state, report = convert(osum, keep_llm)
    if llm_dir is not None:
        report["llm_check"] = check_llm(osum, llm_dir)
    output.mkdir(parents=True, exist_ok=True)
    torch.save(state, output / "model.pt")
    report["source"] = str(osum_path)
    (output / "conversion.json").write_text(
        json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8"
    )
    return report


def main(argv: list[str] | None = None) -> int:
    """`osum-convert`: one line and exit 2 (paths), 1 (runtime) or 130 (Ctrl-C, SIGTERM)."""
    return run_command("osum-convert", _main, argv)


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="osum-convert",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    ap.add_argument("--osum", required=True, type=Path, help="OSUM's infer.pt")
    ap.add_argument("--output", required=True, type=Path, help="directory for model.pt + conversion.json")
    ap.add_argument("--keep-llm", action="store_true", help="keep the frozen LLM base weights too")
    ap.add_argument(
        "--llm", type=Path, help="the local LLM directory to train with: checks it is OSUM's base"
    )
    args = ap.parse_args(argv)
    report = write(args.osum, args.output, args.keep_llm, args.llm)
    print(json.dumps(report["summary"]))
    if "llm_check" in report:
        result = report["llm_check"]["result"]
        print(f"LLM check against {args.llm}: {result}")
        if result != "equal":
            print("  OSUM's LoRA was trained on another base LLM: point model.llm.path at OSUM's base LLM")
    print(f"use it with: --set model.adapter.type=osum --set model.init_from={args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
