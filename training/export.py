"""`osum-export`: merge LoRA into the LLM and write a self-contained inference bundle.

    osum-export --config CFG.yaml --checkpoint RUN_DIR|CHECKPOINT_DIR --output OUT
    osum-decode --config OUT/config.yaml --checkpoint OUT --cuts CUTS --output DEC

OUT holds llm/ (plain HF model + tokenizer, LoRA merged: loads without peft), encoder/ (Whisper
layout), model.pt (adapter) and config.yaml pointing at them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training.checkpoint import export_merged, load_trainable, resolve_checkpoint
from training.cli_errors import run_command
from training.config import load_config
from training.model import build_model


def export(config: str | Path, checkpoint: Path, output: Path, overrides: list[str] | None = None) -> Path:
    cfg = load_config(config, overrides)
    model, tokenizer = build_model(cfg)
    load_trainable(model, resolve_checkpoint(checkpoint))
    return export_merged(model, tokenizer, cfg.to_dict(), output)


def main(argv: list[str] | None = None) -> int:
    """`osum-export`: one line and exit 2 (config, paths), 1 (runtime) or 130 (Ctrl-C, SIGTERM)."""
    return run_command("osum-export", _main, argv)


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="osum-export", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--config", required=True)
    ap.add_argument("--checkpoint", required=True, type=Path)
    ap.add_argument("--output", required=True, type=Path)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    print(export(args.config, args.checkpoint, args.output, args.set))
    return 0


if __name__ == "__main__":
    sys.exit(main())
