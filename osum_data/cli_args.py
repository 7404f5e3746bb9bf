"""What every `osum-data` command shares: argument types and flags, and the one way a command ends.

A low module: `cli.py` (the top) and the command groups it wires in (`assembly_cli`, `llm.cli`)
import it, and it imports none of them, so the command modules never import `cli.py` back.
"""

from __future__ import annotations

import argparse
import errno
import sys
import traceback
from collections.abc import Callable

from osum_data.errors import EXIT_INTERRUPTED, EXIT_RUNTIME, EXIT_USAGE, OsumError


def positive_int(text: str) -> int:
    """An argparse `type` for counts (workers, shard sizes): a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_set_flag(p: argparse.ArgumentParser, help: str, metavar: str = "KEY=VALUE") -> None:
    """`--set KEY=VALUE`, repeatable: the overrides `yaml_config.apply_overrides` applies."""
    p.add_argument("--set", action="append", default=[], metavar=metavar, help=help)


def add_engine_flags(p: argparse.ArgumentParser, workers: int | None = None) -> None:
    """--workers / --address / --no-progress of every command that runs on Ray."""
    default = "CPU count" if workers is None else str(workers)
    p.add_argument("--workers", type=positive_int, default=workers, help=f"Ray workers (default: {default})")
    p.add_argument("--address", default=None, help="existing Ray cluster, e.g. 'auto'")
    p.add_argument("--no-progress", action="store_true")


def explain_os_error(e: OSError) -> tuple[str, int]:
    """One line and the exit code for an OSError: a full disk is a failure while working (1); a
    missing, misplaced or unreadable path the user named is theirs to fix (2)."""
    if e.errno == errno.ENOSPC:
        where = f" writing {e.filename}" if e.filename else ""
        return f"disk full{where}; free space and run the same command again", EXIT_RUNTIME
    if isinstance(e, FileNotFoundError | NotADirectoryError | IsADirectoryError | PermissionError):
        return (f"{e.strerror}: {e.filename}" if e.filename else str(e)), EXIT_USAGE
    return _unexpected(e)


def _unexpected(e: BaseException) -> tuple[str, int]:
    text = " ".join(str(e).split())[:500]
    return f"unexpected {type(e).__name__}: {text} (run with --debug for the traceback)", EXIT_RUNTIME


def explain(e: BaseException) -> tuple[str, int]:
    """(one line, exit code) for whatever ended a command. An `OsumError` says both itself; nothing
    else is guessed to be a usage error except the OS's own path errors and undecodable text."""
    if isinstance(e, OsumError):
        return str(e), e.exit_code
    if isinstance(e, OSError):
        return explain_os_error(e)
    if isinstance(e, UnicodeDecodeError):  # its args[0] is only the codec's name ("utf-8")
        return (
            f"a file is not {e.encoding} text ({e.reason}, byte 0x{e.object[e.start]:02x} at offset "
            f"{e.start}); save it as UTF-8 (run with --debug to see which file)",
            EXIT_USAGE,
        )
    return _unexpected(e)


def run_command(
    args: argparse.Namespace, run: Callable[[argparse.Namespace], int] | None = None, prog: str = "osum-data"
) -> int:
    """Run the parsed command (`run(args)`, by default `args.func(args)`) and end it the one way: its
    exit code, or one line on stderr and the error's exit code (130 for Ctrl-C/SIGTERM); `--debug`
    adds the traceback."""
    where = f"{prog} {args.command}"
    try:
        return (run or args.func)(args)
    except KeyboardInterrupt:
        print(f"{where}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        if getattr(args, "debug", False):
            traceback.print_exc()
        message, code = explain(e)
        print(f"{where}: error: {message}", file=sys.stderr)
        return code
