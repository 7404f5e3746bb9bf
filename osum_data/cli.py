"""The `osum-data` command line: prepare (import), run (pipelines on Ray), export, demo."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cmd_prepare(args: argparse.Namespace) -> int:
    from osum_data.corpora import prepare

    report = prepare(args.corpus, Path(args.corpus_dir), Path(args.out_dir))
    print(report.summary())
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from osum_data.run.config import load_pipeline
    from osum_data.run.runner import run_pipeline

    config = load_pipeline(args.pipeline, args.set)
    result = run_pipeline(
        config,
        args.input,
        args.output,
        workers=args.workers,
        address=args.address,
        progress=not args.no_progress,
    )
    s = result.summary
    print(
        json.dumps(
            {
                k: s[k]
                for k in (
                    "pipeline",
                    "in",
                    "out",
                    "rejected",
                    "hours_in",
                    "hours_out",
                    "rejected_by_reason",
                    "hours_by_task",
                    "skipped_shards",
                )
            },
            indent=2,
            ensure_ascii=False,
        )
    )
    print(f"wrote {result.output_dir}/cuts.jsonl.gz, rejects.jsonl.gz, summary.json")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from osum_data.export.osum import export_osum

    report = export_osum(Path(args.cuts), Path(args.out), shards=args.shards, shard_size=args.shard_size)
    print(report.summary())
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from osum_data.demo import run_demo

    run_demo(
        Path(args.output),
        Path(args.plan),
        workers=args.workers,
        limit=args.limit,
        progress=not args.no_progress,
    )
    return 0


def _cmd_tasks(args: argparse.Namespace) -> int:
    from osum_data.tasks import prompt_pool, registry

    reg = registry()
    for task in reg.tasks.values():
        for key in task.keys:
            sizes = ", ".join(f"{lang}:{len(prompt_pool(lang)[key])}" for lang in ("zh", "en"))
            print(f"{task.id:12s} {key:40s} prompts {sizes}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="osum-data", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    prep = sub.add_parser("prepare", help="import a corpus into OUT_DIR/cuts.jsonl.gz")
    prep.add_argument("corpus", choices=["tsv", "librispeech", "aishell", "commonvoice"])
    prep.add_argument("corpus_dir")
    prep.add_argument("out_dir")
    prep.set_defaults(func=_cmd_prepare)

    run = sub.add_parser("run", help="run a pipeline YAML on Ray")
    run.add_argument("pipeline")
    run.add_argument("--input", required=True, help="input cuts (jsonl or jsonl.gz)")
    run.add_argument("--output", required=True, help="output directory")
    run.add_argument("--workers", type=int, default=None, help="Ray workers (default: CPU count)")
    run.add_argument("--address", default=None, help="existing Ray cluster, e.g. 'auto'")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override: shard_size=100, normalize_text.lowercase=true",
    )
    run.add_argument("--no-progress", action="store_true")
    run.set_defaults(func=_cmd_run)

    exp = sub.add_parser("export", help="export a templated manifest")
    exp_sub = exp.add_subparsers(dest="format", required=True)
    osum = exp_sub.add_parser("osum", help="OSUM/WeNet raw list (+ tar shards)")
    osum.add_argument("cuts")
    osum.add_argument("out")
    osum.add_argument("--shards", action="store_true", help="also write tar shards")
    osum.add_argument("--shard-size", type=int, default=1000)
    osum.set_defaults(func=_cmd_export)

    demo = sub.add_parser("demo", help="the demo: real speech through every pipeline of demo.yaml")
    demo.add_argument("--output", default="manifests/demo")
    demo.add_argument("--plan", default="pipelines/demo.yaml")
    demo.add_argument("--workers", type=int, default=2)
    demo.add_argument("--limit", type=int, default=None, help="use only the first N prompts")
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(func=_cmd_demo)

    tasks = sub.add_parser("tasks", help="list task keys and prompt-pool sizes")
    tasks.set_defaults(func=_cmd_tasks)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"osum-data {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
