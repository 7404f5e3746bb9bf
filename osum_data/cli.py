"""The `osum-data` command line: prepare, run (on Ray), export, mix, audit, report, run-all, demo."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from osum_data.cli_args import add_engine_flags, add_set_flag, positive_int, run_command
from osum_data.errors import EXIT_RUNTIME

# What `run` prints of its summary.json.
RUN_SUMMARY = (
    "pipeline in out rejected derived accounting hours_in hours_out rejected_by_reason hours_by_task "
    "skipped_shards worker_deaths"
).split()


def _cmd_prepare(args: argparse.Namespace) -> int:
    from osum_data.corpora import prepare

    report = prepare(args.corpus, Path(args.corpus_dir), Path(args.out_dir))
    print(report.summary())
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from osum_data.run.config import load_pipeline
    from osum_data.run.runner import run_pipeline

    config = load_pipeline(args.pipeline, args.set)
    print(
        f"{config.name}: {len(config.stages)} stages, config hash {config.hash()}, output {args.output}",
        file=sys.stderr,
    )
    result = run_pipeline(
        config,
        args.input,
        args.output,
        workers=args.workers,
        address=args.address,
        progress=not args.no_progress,
    )
    s = result.summary
    print(json.dumps({k: s[k] for k in RUN_SUMMARY}, indent=2, ensure_ascii=False))
    if s.get("transient_rejects"):
        print(
            f"note: {s['transient_rejects']} cut(s) were rejected only because an endpoint was unreachable; "
            "run the same command again to retry them",
            file=sys.stderr,
        )
    for what in s.get("isolated", []):
        print(f"note: {what} killed its worker and was rejected (worker_died); the rest ran", file=sys.stderr)
    print(f"wrote {result.output_dir}/cuts.jsonl.gz, rejects.jsonl.gz, summary.json")
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


def _cmd_audit(args: argparse.Namespace) -> int:
    from osum_data.audit import audit

    result = audit(args.dir)
    print(result.table())
    return EXIT_RUNTIME if result.failed else 0


def _cmd_tasks(args: argparse.Namespace) -> int:
    from osum_data.tasks import prompt_pool, registry

    reg = registry()
    for task in reg.tasks.values():
        for key in task.keys:
            sizes = ", ".join(f"{lang}:{len(prompt_pool(lang)[key])}" for lang in ("zh", "en"))
            print(f"{task.id:12s} {key:40s} prompts {sizes}")
    return 0


def _cmd_stages(args: argparse.Namespace) -> int:
    from osum_data.run.params import describe_stage, stage_listing
    from osum_data.run.stage import all_stages, get_stage

    defs = [get_stage(n) for n in args.names] if args.names else all_stages()
    if args.json:
        print(json.dumps([describe_stage(d) for d in defs], indent=2, default=str))
    else:
        print(stage_listing(defs))
    return 0


def _preparers() -> list[str]:
    from osum_data.corpora import PREPARERS

    return list(PREPARERS)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="osum-data", description=__doc__)
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)

    prep = sub.add_parser("prepare", help="import a corpus into OUT_DIR/cuts.jsonl.gz")
    prep.add_argument("corpus", choices=sorted(_preparers()))
    prep.add_argument("corpus_dir")
    prep.add_argument("out_dir")
    prep.set_defaults(func=_cmd_prepare)

    run = sub.add_parser("run", help="run a pipeline YAML on Ray")
    run.add_argument("pipeline")
    run.add_argument("--input", default=None, help="input cuts (jsonl or jsonl.gz); not for source pipelines")
    run.add_argument("--output", required=True, help="output directory")
    add_engine_flags(run)
    add_set_flag(run, "override: shard_size=100, normalize_text.lowercase=true")
    run.set_defaults(func=_cmd_run)

    from osum_data.assembly_cli import add_assembly_commands

    add_assembly_commands(sub)  # export osum|nemo|hf|sharegpt, mix, report, run-all
    _add_source_flags(sub)

    demo = sub.add_parser("demo", help="the demo: real speech through every pipeline of demo.yaml")
    demo.add_argument("--output", default="manifests/demo")
    demo.add_argument("--plan", default="pipelines/demo.yaml")
    demo.add_argument("--workers", type=positive_int, default=2)
    demo.add_argument("--limit", type=int, default=None, help="use only the first N prompts")
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(func=_cmd_demo)

    aud = sub.add_parser(
        "audit", help="leaks, duplicates, balance and coverage of a mix or OSUM export folder"
    )
    aud.add_argument("dir", help="a mix folder (osum-data mix --output) or an OSUM export folder")
    aud.set_defaults(func=_cmd_audit)

    tasks = sub.add_parser("tasks", help="list task keys and prompt-pool sizes")
    tasks.set_defaults(func=_cmd_tasks)

    stages = sub.add_parser("stages", help="list the stages with their typed parameters and resources")
    stages.add_argument("names", nargs="*", help="only these stages")
    stages.add_argument("--json", action="store_true", help="as JSON")
    stages.set_defaults(func=_cmd_stages)

    from osum_data.llm.cli import add_llm_commands

    add_llm_commands(sub)
    return p


def _add_source_flags(sub: argparse._SubParsersAction) -> None:
    """--allow-command-sources / --allow-url-sources on every command that decodes manifests' audio
    (osum_data/sources.py: by default only local files and in-memory audio)."""
    from osum_data.sources import add_cli_flags

    for name in ("run", "mix", "run-all"):
        add_cli_flags(sub.choices[name])
    for action in sub.choices["export"]._actions:
        if isinstance(action, argparse._SubParsersAction):
            for p in action.choices.values():
                add_cli_flags(p)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the command; every command ends in `run_command`'s one handler."""
    from osum_data.run.signals import stop_on_sigterm
    from osum_data.sources import policy_env

    def run(args: argparse.Namespace) -> int:
        stop_on_sigterm()  # SIGTERM ends a command as Ctrl-C does (Ray's start sets it again)
        with policy_env(args):
            return args.func(args)

    return run_command(build_parser().parse_args(argv), run)


if __name__ == "__main__":
    sys.exit(main())
