"""The runner's Ray: a private local instance sized for the run, or the cluster at `--address`
(one that cannot be reached is one line within about 20 s), and the user's cause inside a Ray error."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Iterator
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError, WorkerCrashedError

from osum_data.errors import OsumError
from osum_data.run.signals import stop_on_sigterm

# A worker process that died (segfault, out of memory): its shard is retried, then isolated.
WORKER_DEATHS = (RayActorError, WorkerCrashedError, ray.exceptions.OutOfMemoryError)


class RunError(OsumError):
    """A run that cannot go on; the message is one line for the user."""


def cause_of(e: BaseException) -> BaseException:
    """The original exception inside Ray's wrappers."""
    inner = getattr(e, "cause", None)
    return cause_of(inner) if isinstance(inner, BaseException) and inner is not e else e


def cause_text(e: BaseException) -> str:
    """The user-facing cause inside a Ray error (the original exception, one line)."""
    inner = getattr(e, "cause", None)
    if isinstance(inner, BaseException) and inner is not e:
        return cause_text(inner)
    text = str(e).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if isinstance(e, RayTaskError | RayActorError) and lines:
        # Ray prefixes a traceback; the last line holds the exception.
        return lines[-1].strip()[:500]
    return f"{type(e).__name__}: {' '.join(lines)[:500]}" if lines else type(e).__name__


def ensure_ray(address: str | None, workers: int) -> None:
    """Connect to a cluster (`address`) or start a local Ray sized for `workers`."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # A failure the driver reports in one line (disk full, permission denied) would be followed by
    # Ray's log of every other in-flight shard's copy of it ("Unhandled error" tracebacks).
    os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")
    try:
        if address:
            connect(address)
        else:
            # address="local" always starts a private instance; plain ray.init() would silently
            # join whatever cluster happens to run on this machine.
            ray.init(
                address="local",
                num_cpus=max(workers, os.cpu_count() or 1),
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=True,
            )
    finally:
        stop_on_sigterm()  # ray.init sets its own handler (sys.exit mid-call: a C++ abort)


@contextlib.contextmanager
def _stderr_into(sink: Any) -> Iterator[None]:
    """Redirect file descriptor 2 (Python's and Ray's C++ logging alike) into `sink` for a while."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(sink.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _unreachable(address: str, reason: str) -> RunError:
    return RunError(
        f"cannot reach the Ray cluster at {address}: {reason[:200]}; is `ray start --head` running there?"
    )


def connect(address: str) -> None:
    """Join the cluster at `address`; an unreachable one is one line, within about 20 s.

    Ray retries a closed port for 40 s, so `host:port` is first tried with a plain TCP connection
    (5 s). While Ray retries a port that answers but is no GCS (about 20 s), its GCS client logs a
    warning a second: that log is held back."""
    import socket
    import tempfile

    hostport = re.fullmatch(r"(?:ray://)?([^:/\[\]]+):(\d+)", address)
    if hostport:
        try:
            socket.create_connection((hostport[1], int(hostport[2])), timeout=5).close()
        except OSError as e:
            why = "no answer within 5 s" if isinstance(e, TimeoutError) else e.strerror or type(e).__name__
            raise _unreachable(address, why) from None
    with tempfile.TemporaryFile() as held:
        try:
            with _stderr_into(held):
                ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
        except ConnectionError as e:
            cause = cause_of(e.__cause__) if e.__cause__ is not None else e
            lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
            reason = lines[-1].removeprefix("ray.exceptions.RpcError: ") if lines else type(e).__name__
            raise _unreachable(address, reason) from e
        held.seek(0)
        sys.stderr.write(held.read().decode("utf-8", "replace"))  # joined: what Ray said is shown
