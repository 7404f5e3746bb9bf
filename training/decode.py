"""`osum-decode`: batched greedy decoding of a manifest and per-task metrics.

    osum-decode --config CFG.yaml --checkpoint RUN_DIR|CHECKPOINT_DIR --cuts CUTS --output DIR

Writes DIR/hyps.jsonl (id, task, ref, hyp), DIR/metrics.json (per task key: WER/CER, label
accuracy, timestamp error; see training.metrics) and DIR/skipped.jsonl (id, reason) of the cuts the
model cannot take (longer than data.max_cut_duration). Each cut is prompted with its stored
instruction.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from training.checkpoint import load_trainable, resolve_checkpoint
from training.cli_errors import run_command
from training.config import Config, load_config
from training.data import make_loader, open_cuts
from training.evaluate import decode_rows
from training.metrics import task_metrics
from training.model import SpeechLLM, build_model, speech_boundary_tokens
from training.sequence import PromptFormat, prompt_format


def generate_rows(
    model: SpeechLLM, fmt: PromptFormat, cfg: Config, cuts, device: torch.device
) -> tuple[list[dict], dict[str, str]]:
    """Hypotheses of every cut the model can take, and {cut id: reason} of the cuts it skipped."""
    data_cfg = cfg.data.model_copy(update={"max_duration": cfg.decode.max_duration})
    loader = make_loader(
        cuts, fmt, data_cfg, cfg.seed, train=False, with_targets=False, epochs=1,
        boundary_tokens=speech_boundary_tokens(cfg),
    )  # fmt: skip
    rows = decode_rows(model, loader, fmt, cfg, device, synced=False)
    return rows, dict(loader.cut_filter.ids)


def decode(cfg: Config, checkpoint: Path, cuts_spec: str, output: Path) -> dict[str, Any]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = build_model(cfg)
    load_trainable(model, resolve_checkpoint(checkpoint))
    model.to(device)
    fmt = prompt_format(cfg, tokenizer)
    rows, skipped = generate_rows(model, fmt, cfg, open_cuts(cuts_spec), device)
    metrics = task_metrics(rows)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    with open(output / "hyps.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    with open(output / "skipped.jsonl", "w", encoding="utf-8") as f:
        for cut_id, reason in skipped.items():
            f.write(json.dumps({"id": cut_id, "reason": reason}, ensure_ascii=False) + "\n")
    if skipped:
        print(f"skipped {len(skipped)} cuts the model cannot take (listed in {output / 'skipped.jsonl'})")
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
    return metrics


def main(argv: list[str] | None = None) -> int:
    """`osum-decode`: one line and exit 2 (config, paths), 1 (runtime) or 130 (Ctrl-C, SIGTERM)."""
    return run_command("osum-decode", _main, argv)


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="osum-decode", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--config", required=True)
    ap.add_argument(
        "--checkpoint", required=True, type=Path, help="run dir (latest checkpoint), checkpoint or export dir"
    )
    ap.add_argument("--cuts", required=True, help="CutSet jsonl.gz, pipeline output dir or Shar dir")
    ap.add_argument("--output", required=True, type=Path)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    from osum_data.sources import add_cli_flags, policy_env
    add_cli_flags(ap)
    args = ap.parse_args(argv)
    with policy_env(args):
        metrics = decode(load_config(args.config, args.set), args.checkpoint, args.cuts, args.output)
    for key, m in metrics.items():
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}
        print(f"{key}: {json.dumps(shown, ensure_ascii=False)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
