"""SIGTERM as Ctrl-C: a scheduler's or `kill`'s stop ends a command the way an interrupt does."""

from __future__ import annotations

import signal
import threading


def _interrupt(signum, frame) -> None:  # noqa: ARG001
    raise KeyboardInterrupt


def stop_on_sigterm() -> None:
    """SIGTERM raises KeyboardInterrupt in the main thread, so a command stops as on Ctrl-C: one
    line, exit 130, finished shards kept for the resume. Ray's `ray.init` installs its own handler
    (`sys.exit` in the middle of a Ray call, which ends in a C++ abort and a stack dump), so the
    runner calls this again once Ray is up."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
