"""The learning proof on CPU: does the trainer fit every task of the demo mix?

Takes up to --per-key samples per task key (all eight tasks, ASR+X and X-only) from the demo
pipelines' outputs (`make demo`: manifests/demo/<task>/cuts.jsonl.gz), trains a CPU config on them
and decodes the same set greedily every --eval-every steps (the trainer's own dev generation), then
checks the bar of issue 18:
  CER <= 5 % for every task with a transcript, >= 95 % of SRWT targets parsing with a mean
  timestamp error <= 0.1 s, label accuracy >= 0.95 for every label task (beside the majority
  baseline).
Prints the loss curve and the metric curves (from OUT/train_log.jsonl) and PASS/FAIL per bar.

    .venv/bin/python bench/train_learns.py [--demo manifests/demo] [--per-key 32] [--steps 1500]
        [--max-seconds 900] [--config training/configs/tiny.yaml] [--set key=value ...] --output DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
TASKS = ("asr", "ved", "ser", "sap", "sgc", "srwt", "ssr", "sttc")


def subset(demo: Path, per_key: int, max_duration: float) -> list:
    """Up to `per_key` cuts of each task key, in manifest order. Tasks template the same
    utterances (same cut ids): ids get the task's name so that each sample is scored once."""
    from lhotse import CutSet

    picked, seen, count = [], set(), defaultdict(int)
    for task in TASKS:
        path = demo / task / "cuts.jsonl.gz"
        if not path.exists():
            raise FileNotFoundError(f"{path}: run `osum-data demo --output {demo}` first")
        for cut in CutSet.from_jsonl_lazy(path):
            key = (cut.custom or {}).get("task")
            if key and count[key] < per_key and (cut.id, key) not in seen and cut.duration <= max_duration:
                count[key] += 1
                seen.add((cut.id, key))
                picked.append(cut.with_id(f"{task}-{cut.id}"))
    return picked


def verdict(metrics: dict) -> list[tuple[str, bool, str]]:
    out = []
    for key, m in sorted(metrics.items()):
        if m.get("cer") is not None:
            out.append((f"{key} CER", m["cer"] <= 0.05, f"{m['cer']:.3f} (<= 0.05)"))
        if "label_accuracy" in m:
            base = m.get("majority_baseline")
            out.append((f"{key} label accuracy", m["label_accuracy"] >= 0.95,
                        f"{m['label_accuracy']:.3f} (>= 0.95; majority baseline {base:.3f})"))  # fmt: skip
        if m["task"] == "srwt":
            parsed = 1 - m["parse_errors"] / m["n"]
            mae = m.get("timestamp_mae_s")
            ok = parsed >= 0.95 and mae is not None and mae <= 0.1
            out.append((f"{key} SRWT", ok, f"{parsed:.1%} parse (>= 95%), timestamp MAE {mae} s (<= 0.1)"))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--demo", type=Path, default=REPO / "manifests/demo")
    ap.add_argument("--per-key", type=int, default=32)
    ap.add_argument("--max-cut-seconds", type=float, default=12.0)
    ap.add_argument("--config", type=Path, default=REPO / "training/configs/tiny.yaml")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--max-seconds", type=float, help="stop (checkpoint, final decode) after this long")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--output", type=Path, required=True)
    args = ap.parse_args(argv)

    import torch
    from lhotse import CutSet

    from training.config import load_config
    from training.train import train

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    args.output.mkdir(parents=True, exist_ok=True)
    cuts = subset(args.demo, args.per_key, args.max_cut_seconds)
    manifest = args.output / "subset.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(manifest)
    keys = defaultdict(int)
    for c in cuts:
        keys[c.custom["task"]] += 1
    minutes = sum(c.duration for c in cuts) / 60
    print(f"{len(cuts)} cuts, {minutes:.1f} min of audio: {dict(keys)}", flush=True)
    overrides = [f"optim.max_steps={args.steps}", f"train.eval_every={args.eval_every}",
                 f"train.eval_decode_cuts={len(cuts)}", "train.log_every=10", "train.tensorboard=false",
                 f"train.save_every={args.eval_every}", "data.num_workers=0", *args.set]  # fmt: skip
    cfg = load_config(args.config, overrides)
    t0 = time.perf_counter()
    step, chunk = 0, args.eval_every
    while step < args.steps:  # chunks of eval_every steps, so a time limit ends at an evaluation
        out = train(cfg, [str(manifest)], args.output / "run", dev_spec=str(manifest), resume=step > 0,
                    stop_after_steps=chunk)  # fmt: skip
        step = out["step"]
        if args.max_seconds and time.perf_counter() - t0 > args.max_seconds:
            print(f"time limit: stopped after step {step}", flush=True)
            break
    wall = time.perf_counter() - t0
    log = [json.loads(x) for x in (args.output / "run" / "train_log.jsonl").read_text().splitlines()]
    curve = [f"{r['step']}:{r['loss']:.3f}" for r in log if "loss" in r and r["step"] % 50 == 0]
    print("loss curve: " + " ".join(curve))
    evals = [r for r in log if "dev_gen" in r]
    for r in evals:
        brief = []
        for key, m in sorted(r["dev_gen"].items()):
            v = m.get("cer", m.get("label_accuracy"))
            brief.append(f"{key}={v:.2f}" if v is not None else key)
        print(f"step {r['step']}: " + ", ".join(brief))
    if not evals:
        print("no evaluation ran")
        return 1
    final = evals[-1]["dev_gen"]
    checks = verdict(final)
    for name, ok, text in checks:
        print(f"{'PASS' if ok else 'FAIL'} {name}: {text}")
    passed = all(ok for _, ok, _ in checks)
    verdict_line = "ALL PASS" if passed else "NOT ALL PASS"
    print(f"{verdict_line} after {evals[-1]['step']} steps, {wall / 60:.1f} min wall "
          f"on {torch.get_num_threads()} threads")  # fmt: skip
    (args.output / "verdict.json").write_text(json.dumps({"passed": passed, "steps": evals[-1]["step"],
        "wall_s": wall, "checks": checks, "metrics": final}, indent=1))  # fmt: skip
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
