"""How the trainer's commands end (`osum-train`, `osum-decode`, `osum-export`, `osum-convert`).

The same contract as `osum-data`: one line on stderr naming what is wrong, exit 2 for the command
line and config files (a wrong key, type or path), 1 for a failure while working, 130 for Ctrl-C or
SIGTERM (a job scheduler's stop). `--debug` (or OSUM_DEBUG=1) shows the traceback as well.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from osum_data.yaml_config import ConfigError

EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(ConfigError):
    """Arguments that do not fit together (e.g. two --weights for one --train)."""


def explain(e: BaseException) -> tuple[str, int]:
    """(one line, exit code) for an error a trainer command ends with."""
    if isinstance(e, ConfigError):
        return str(e), EXIT_USAGE
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        where = f" writing {e.filename}" if e.filename else ""
        return f"disk full{where}; free space and run the command again", EXIT_RUNTIME
    if isinstance(e, FileNotFoundError | NotADirectoryError | IsADirectoryError | PermissionError):
        what = f"{e.strerror}: {e.filename}" if e.filename else " ".join(str(e).split())
        return what, EXIT_USAGE
    text = " ".join(str(e).split())[:500]
    return f"{type(e).__name__}: {text} (run with --debug for the traceback)", EXIT_RUNTIME


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt in the main thread, so a scheduler's stop ends like Ctrl-C
    (checkpoint writes are atomic; the run resumes with --resume) instead of killing mid-step."""
    if sys.platform == "win32":
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (called from a test runner's worker thread)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_command(prog: str, body: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a command's `body(argv)` and turn whatever ends it into one line and an exit code.
    argparse's own usage errors exit 2 with its message, as before."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("OSUM_DEBUG") == "1"
    args = [a for a in args if a != "--debug"]
    try:
        with sigterm_as_interrupt():
            return body(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        if debug:
            traceback.print_exc()
        message, code = explain(e)
        print(f"{prog}: error: {message}", file=sys.stderr)
        return code
