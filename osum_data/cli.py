"""The `osum-data` command line: prepare, run (on Ray), export, mix, audit, report, run-all, demo."""

from __future__ import annotations

import argparse
import errno
import json
import sys
import traceback
from pathlib import Path

EXIT_RUNTIME = 1  # the data, the disk or a worker failed
EXIT_USAGE = 2  # the command line or a config file is wrong
EXIT_INTERRUPTED = 130


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
    print(
        json.dumps(
            {
                k: s[k]
                for k in (
                    "pipeline",
                    "in",
                    "out",
                    "rejected",
                    "derived",
                    "accounting",
                    "hours_in",
                    "hours_out",
                    "rejected_by_reason",
                    "hours_by_task",
                    "skipped_shards",
                    "worker_deaths",
                )
            },
            indent=2,
            ensure_ascii=False,
        )
    )
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


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


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
    run.add_argument("--workers", type=positive_int, default=None, help="Ray workers (default: CPU count)")
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


def _usage_errors() -> tuple[type[BaseException], ...]:
    from osum_data.run.inputs import InputMissing
    from osum_data.run.outdir import OutputError
    from osum_data.yaml_config import ConfigError

    return (ConfigError, OutputError, InputMissing, argparse.ArgumentTypeError)


def _runtime_errors() -> tuple[type[BaseException], ...]:
    from osum_data.export.engine import ExportCountError
    from osum_data.llm.client import LLMEndpointError
    from osum_data.llm.server import EmbeddedServerError
    from osum_data.plan import PlanIncomplete
    from osum_data.run.inputs import InputError
    from osum_data.run.runner import RunError

    return (InputError, RunError, LLMEndpointError, EmbeddedServerError, PlanIncomplete, ExportCountError)


def explain(e: BaseException) -> tuple[str, int]:
    """One line for the user and the exit code, for any error a command can end with."""
    from osum_data.run.runner import Interrupted

    if isinstance(e, Interrupted):
        return str(e), EXIT_INTERRUPTED
    if isinstance(e, _usage_errors()):
        return str(e), EXIT_USAGE
    if isinstance(e, _runtime_errors()):
        return str(e), EXIT_RUNTIME
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        where = f" writing {e.filename}" if e.filename else ""
        return f"disk full{where}; free space and run the same command again", EXIT_RUNTIME
    if isinstance(e, FileNotFoundError | NotADirectoryError | IsADirectoryError | PermissionError):
        what = f"{e.strerror}: {e.filename}" if e.filename else str(e)
        return what, EXIT_USAGE
    if isinstance(e, UnicodeDecodeError):  # its args[0] is only the codec's name ("utf-8")
        return (
            f"a file is not {e.encoding} text ({e.reason}, byte 0x{e.object[e.start]:02x} at offset "
            f"{e.start}); save it as UTF-8 (run with --debug to see which file)",
            EXIT_USAGE,
        )
    if isinstance(e, KeyError | ValueError):
        return (e.args[0] if e.args and isinstance(e.args[0], str) else str(e)), EXIT_USAGE
    text = " ".join(str(e).split())[:500]
    return f"unexpected {type(e).__name__}: {text} (run with --debug for the traceback)", EXIT_RUNTIME


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from osum_data.sources import policy_env

    try:
        from osum_data.run.signals import stop_on_sigterm

        stop_on_sigterm()  # SIGTERM ends a command as Ctrl-C does (Ray's start sets it again)
        with policy_env(args):
            return args.func(args)
    except KeyboardInterrupt:
        print(f"osum-data {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        if args.debug:
            traceback.print_exc()
        message, code = explain(e)
        print(f"osum-data {args.command}: error: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
