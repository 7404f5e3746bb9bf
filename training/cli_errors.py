"""How the trainer's commands end (`osum-train`, `osum-decode`, `osum-export`, `osum-convert`).

The house contract: every error a command reports derives from `osum_data.errors.OsumError`, which
carries its exit code (2 the command line or a config file, 1 a failure while working, 130 Ctrl-C
or SIGTERM); one line on stderr names what is wrong. The OS's own path errors are put in those terms
here (a missing path the user named: 2; a full disk: 1); anything else is a bug, reported as one
line with exit 1. `--debug` (or OSUM_DEBUG=1) shows the traceback as well.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from osum_data.errors import Interrupted, OsumError, UsageError


def as_osum_error(e: BaseException) -> OsumError:
    """`e` in the house's terms: an OsumError as it is, the OS's errors by their kind."""
    if isinstance(e, OsumError):
        return e
    if isinstance(e, KeyboardInterrupt):
        return Interrupted("interrupted")
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        where = f" writing {e.filename}" if e.filename else ""
        return OsumError(f"disk full{where}; free space and run the command again")
    if isinstance(e, FileNotFoundError | NotADirectoryError | IsADirectoryError | PermissionError):
        return UsageError(f"{e.strerror}: {e.filename}" if e.filename else " ".join(str(e).split()))
    text = " ".join(str(e).split())[:500]
    return OsumError(f"{type(e).__name__}: {text} (run with --debug for the traceback)")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt in the main thread, so a scheduler's stop ends like Ctrl-C
    (checkpoint writes are atomic; the run resumes with --resume) instead of killing mid-step."""

    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (called from a test runner's worker thread)
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def one_line(e: BaseException) -> str:
    """The error's message on one line. An error raised in a DataLoader worker comes back with the
    worker's traceback in its message (torch re-raises it that way): its last line is the message."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].startswith("Caught ") and "DataLoader worker" in lines[0]:
        return lines[-1].split(": ", 1)[-1]
    return " ".join(lines)


def run_command(prog: str, body: Callable[[list[str]], int], argv: list[str] | None = None) -> int:
    """Run a command's `body(argv)` and end it the one way: its exit code, or one line and the
    error's exit code. argparse's own usage errors exit 2 with its message, as before."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("OSUM_DEBUG") == "1"
    args = [a for a in args if a != "--debug"]
    try:
        with sigterm_as_interrupt():
            return body(args)
    except (Exception, KeyboardInterrupt) as e:
        error = as_osum_error(e)
        if debug and not isinstance(error, Interrupted):
            traceback.print_exc()
        line = f"{prog}: {error}" if isinstance(error, Interrupted) else f"{prog}: error: {one_line(error)}"
        print(line, file=sys.stderr)
        return error.exit_code
