"""One way to fail: every error a command reports in one line derives from `OsumError`, which
carries the process exit code, so each CLI needs a single `except OsumError` and nothing maps a
stray `KeyError` or `ValueError` to a usage error by guess.

Exit codes: 1 the data, the disk, a worker or an endpoint failed; 2 the command line or a config
file is wrong (fixable by editing what the user typed); 130 interrupted.
"""

from __future__ import annotations

EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class OsumError(Exception):
    """A failure worth one line to the user (no traceback); `exit_code` says whose fault it is."""

    exit_code = EXIT_RUNTIME


class UsageError(OsumError, ValueError):
    """The command line or a config file is wrong; the message names the file/key and the fix."""

    exit_code = EXIT_USAGE


class Interrupted(OsumError):
    """Stopped by SIGINT/SIGTERM; finished work is kept and a rerun resumes."""

    exit_code = EXIT_INTERRUPTED
