"""Endpoints that cannot work, as a run meets them (issue #15 items 2-3, issue #20 items 3 and 8):
the start-up self-test, the circuit breaker, a wrong key, and a server that echoes the key.

The servers are real HTTP servers on loopback (tests/llm_fault_server.py, a test double: no real
server can be told to die on cue), talked to by the real `openai` client from real Ray workers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from llm_fault_server import FaultServer
from llm_helpers import SENTINEL_KEY, ask, fast_settings, files_containing, llm_env  # noqa: F401

from osum_data.llm import LLMClient, LLMEndpointError, resolve_endpoint
from osum_data.llm.client import LLMEndpointDown
from osum_data.llm.probe import ATTEMPTS
from osum_data.manifest_io import read_jsonl, write_jsonl
from osum_data.run.config import build_config
from osum_data.run.runner import RunError, run_pipeline
from tests.conftest import REPO

TESTS = REPO / "tests"


def _manifest(path: Path, n: int) -> Path:
    """`n` text-only cuts (the LLM stage reads only the transcript)."""
    cuts = []
    for i in range(n):
        sup = {"id": f"c{i:03d}", "recording_id": "none", "start": 0.0, "duration": 0.0, "text": f"line {i}"}
        cuts.append(
            {
                "id": f"c{i:03d}",
                "start": 0.0,
                "duration": 0.0,
                "channel": 0,
                "supervisions": [sup],
                "type": "MonoCut",
            }
        )
    write_jsonl(path, cuts)
    return path


def _fast_llm(base_url: str, cache: Path, **extra) -> dict:
    return {
        "base_url": base_url,
        "model": "fault-model",
        "timeout_s": 0.5,
        "max_retries": 30,  # without the breaker, every cut would grind through all of these
        "max_retry_time_s": 60,
        "backoff_base_s": 0.02,
        "backoff_max_s": 0.05,
        "cache_dir": str(cache),
        **extra,
    }


def _config(llm: dict, shard_size: int = 4):
    return build_config(
        {
            "name": "t",
            "shard_size": shard_size,
            "imports": ["stages_for_tests"],
            "stages": [{"stage": "llm_title"}],
            "llm": llm,
        }
    )


def title_reply(text: str, body: dict) -> str:
    """The answer of the `llm_title` test stage's schema."""
    return json.dumps({"title": text.rsplit(" ", 1)[-1]})


def _done(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "shards").glob("done.*.json")) if (out / "shards").exists() else []


# --- 2: the start-up self-test ------------------------------------------------------------------


@pytest.mark.usefixtures("llm_env")
def test_an_endpoint_that_lists_its_models_but_drops_completions_fails_at_start_up():
    """What the crashing llama.cpp server looked like from outside: /v1/models answers, every chat
    completion is a closed connection. Before: start-up passed and every cut was retried 7 times."""
    with FaultServer(drop_completions=True) as srv:
        with pytest.raises(LLMEndpointError) as e:
            with resolve_endpoint(fast_settings(srv.base_url)):
                pytest.fail("the endpoint was accepted")
        assert srv.dropped == ATTEMPTS and srv.requests == 0
    msg = str(e.value)
    assert "\n" not in msg
    assert srv.base_url in msg and "'fault-model'" in msg and "start-up test" in msg
    assert "lists its models but dropped the chat completion" in msg
    assert "see its log, or point llm.base_url elsewhere" in msg  # the fix


@pytest.mark.usefixtures("llm_env")
def test_a_run_against_a_dropping_endpoint_exits_1_in_one_line_before_any_shard(tmp_path, capsys):
    from osum_data.cli import main

    manifest = _manifest(tmp_path / "in.jsonl.gz", 6)
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("name: p\nimports: [stages_for_tests]\nstages:\n  - stage: llm_title\n")
    out = tmp_path / "out"
    with FaultServer(drop_completions=True) as srv:
        sets = [f"llm.{k}={v}" for k, v in _fast_llm(srv.base_url, tmp_path / "cache").items()]
        rc = main(
            [
                "run",
                str(pipeline),
                "--input",
                str(manifest),
                "--output",
                str(out),
                "--workers",
                "1",
                *[a for s in sets for a in ("--set", s)],
            ]
        )
        assert srv.requests == 0 and srv.dropped == ATTEMPTS
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("osum-data run:")]
    assert rc == 1 and len(err) == 1, err
    assert err[0].startswith(f"osum-data run: error: LLM endpoint {srv.base_url} (model 'fault-model')")
    assert list((out / "shards").iterdir()) == [] and not (out / "cuts.jsonl.gz").exists()


# --- 3: the circuit breaker ---------------------------------------------------------------------


@pytest.mark.usefixtures("llm_env")
def test_the_breaker_stops_a_client_whose_endpoint_died():
    """A dead endpoint stops the client within the breaker's window, not after every request's
    retries (here 30 each, for 40 requests)."""
    with FaultServer(die_after=5) as srv:
        client = LLMClient(
            # Jittered backoff up to 0.2 s: each of the 40 requests (a failed one waits outside its
            # concurrency slot) tries ~5 times in the 0.5 s window.
            fast_settings(
                srv.base_url,
                max_retries=30,
                max_retry_time_s=60,
                breaker_failures=6,
                breaker_window_s=0.5,
                backoff_base_s=0.2,
                backoff_max_s=0.2,
            )
        )
        start = time.monotonic()
        with pytest.raises(LLMEndpointDown) as e:
            client.run([ask(i) for i in range(40)])
        took = time.monotonic() - start
    msg = str(e.value)
    assert "\n" not in msg and srv.base_url in msg and "is down" in msg
    assert "run the same command again" in msg
    assert took < 10, took
    # Far fewer attempts than 35 requests x 31 attempts: the breaker, not the retries, ended it.
    assert client.stats.requests < 35 * 31 // 3, client.stats.requests


@pytest.mark.usefixtures("llm_env")
def test_intermittent_failures_do_not_trip_the_breaker():
    """Answers between the failures reset the count: a flaky endpoint is retried, not abandoned."""
    with FaultServer() as srv:
        client = LLMClient(fast_settings(srv.base_url, breaker_failures=2, breaker_window_s=0.0))
        results = [r for i in range(6) for r in client.run([ask(i, "500x1")])]  # one at a time
    assert all(r.ok for r in results), [r.reason for r in results if not r.ok]


def test_a_server_that_dies_mid_run_stops_the_run_and_the_rerun_resumes(tmp_path, ray_session):
    """Shards finished before the death are kept; the shard that met it is not finished; the run
    stops with one line naming the endpoint instead of grinding the remaining cuts; a re-run (the
    server back, here on another port: the URL is not part of a shard's identity) does the rest."""
    manifest = _manifest(tmp_path / "in.jsonl.gz", 16)
    out = tmp_path / "out"
    breaker = {"breaker_failures": 4, "breaker_window_s": 0.5}
    # Shards 0-1 (8 cuts) are answered, shard 2 meets the death.
    with FaultServer(die_after=9, reply_fn=title_reply) as srv:
        cfg = _config(_fast_llm(srv.base_url, tmp_path / "cache", **breaker))
        with pytest.raises(RunError) as e:
            run_pipeline(cfg, manifest, out, workers=1, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and srv.base_url in msg and "is down" in msg, msg
    assert _done(out) == ["done.000000.json", "done.000001.json"]
    assert not (out / "cuts.jsonl.gz").exists()
    # Without the breaker: 7 cuts x 31 attempts each; with it, a handful of attempts past the death.
    assert srv.dropped < 40, srv.dropped
    with FaultServer(reply_fn=title_reply) as back:
        cfg = _config(_fast_llm(back.base_url, tmp_path / "cache", **breaker))
        res = run_pipeline(cfg, manifest, out, workers=1, progress=False)
        assert back.requests == 16 - 9  # shard 2's answered cut is cached; shards 0-1 are kept
    assert res.summary["skipped_shards"] == 2
    assert res.summary["out"] == 16 and res.summary["rejected"] == 0


# --- issue 20 items 8 and 3: a wrong key; a server that echoes it ---------------------------------

_PIPELINE = "name: keyed\nshard_size: 4\nimports: [stages_for_tests]\nstages:\n  - stage: llm_title\n"


def _cli_run(tmp_path: Path, key: str, base_url: str, out: Path, *sets: str) -> subprocess.CompletedProcess:
    """`osum-data run` in its own process (its Ray workers inherit the environment, key included)."""
    pipeline = tmp_path / "keyed.yaml"
    pipeline.write_text(_PIPELINE)
    llm = _fast_llm(base_url, tmp_path / "llm-cache")
    args = [f"llm.{k}={v}" for k, v in llm.items()] + list(sets)
    env = {
        **os.environ,
        "OPENAI_API_KEY": key,
        "OSUM_CACHE": str(tmp_path / "user-cache"),
        "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)]),
    }
    env.pop("OPENAI_BASE_URL", None)
    cmd = [
        sys.executable,
        "-m",
        "osum_data.cli",
        "run",
        str(pipeline),
        "--input",
        str(tmp_path / "in.jsonl.gz"),
        "--output",
        str(out),
        "--workers",
        "1",
        *[a for s in args for a in ("--set", s)],
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)


def _last_line(proc: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("osum-data run:")]


@pytest.mark.slow
def test_a_wrong_key_stops_the_run_in_one_line_and_the_fixed_key_does_the_shard(tmp_path):
    """Before: HTTP 401 became an `error` reject per cut, exit 0, and the shard was marked finished,
    so the re-run with the right key skipped it and kept the rejects."""
    _manifest(tmp_path / "in.jsonl.gz", 6)
    out = tmp_path / "out"
    wrong = "sk-osum-WRONG-0000000000"
    with FaultServer(accept_key=SENTINEL_KEY, echo_auth=True, reply_fn=title_reply) as srv:
        # At start-up: the self-test meets the 401.
        first = _cli_run(tmp_path, wrong, srv.base_url, out)
        assert first.returncode == 1, first.stderr
        (line,) = _last_line(first)
        assert srv.base_url in line and "API key was refused" in line and "OPENAI_API_KEY" in line
        assert _done(out) == [] and srv.requests == 0
        # In a worker (the self-test off, as when a key is revoked mid-run): the stage stops the run.
        second = _cli_run(tmp_path, wrong, srv.base_url, out, "llm.self_test=false")
        assert second.returncode == 1, second.stderr
        (line,) = _last_line(second)
        assert srv.base_url in line and "refused the request: HTTP 401" in line, line
        assert _done(out) == [] and not (out / "cuts.jsonl.gz").exists()
        assert srv.refused >= 2  # the self-test's one, then the worker's
        # The key fixed: the same command does every shard.
        third = _cli_run(tmp_path, SENTINEL_KEY, srv.base_url, out)
        assert third.returncode == 0, third.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["out"] == 6 and summary["rejected"] == 0 and summary["skipped_shards"] == 0
    # The server echoed the key into every answer (the titles): it reached no file.
    titles = [c["custom"]["title"] for c in read_jsonl(out / "cuts.jsonl.gz")]
    assert all("(auth: Bearer ***)" in t for t in titles), titles
    assert files_containing(tmp_path, SENTINEL_KEY) == []
    assert any(files_containing(tmp_path / "llm-cache", "Bearer ***"))


@pytest.mark.usefixtures("llm_env")
def test_an_echoed_key_is_masked_in_cached_answers_and_reject_reasons(tmp_path):
    """Issue #20 item 3: 8 cache files held the key in the answer text (only the reason was masked)."""
    with FaultServer(echo_auth=True) as srv:
        client = LLMClient(fast_settings(srv.base_url, cache_dir=tmp_path / "cache"))
        results = client.run([ask(1), ask(2, "malformed"), ask(3, schema=None)])
    ok, bad, text = results
    assert ok.ok and "Bearer ***" in ok.value.answer and SENTINEL_KEY not in ok.text
    assert bad.code == "malformed" and "Bearer ***" in bad.reason and SENTINEL_KEY not in bad.text
    assert text.ok and "Bearer ***" in text.value
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 3
    assert files_containing(tmp_path, SENTINEL_KEY) == []
