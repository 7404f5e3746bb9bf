"""The LLM client against a fault-injecting OpenAI-compatible server on loopback (a test double: no
real server fails on cue). Real `openai` client, real HTTP, real cache files."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from llm_fault_server import FaultServer
from llm_helpers import SENTINEL_KEY, Answer, ask, fast_settings, files_containing, llm_env  # noqa: F401

from osum_data.llm import LLMClient, LLMEndpointError, LLMRequest, LLMSettings, LLMStats, load_llm_settings
from osum_data.llm.cache import AnswerCache
from osum_data.llm.cli import settings_from_overrides
from osum_data.llm.endpoint import configured_endpoint
from osum_data.yaml_config import ConfigError

pytestmark = pytest.mark.usefixtures("llm_env")

# Faults every request recovers from or ends in a content reject (cached); `None`: a plain request.
RECOVERABLE = [None, "429x2", "500x2", "timeoutx1", "malformedx1", "slow", "bodyx1", "dropx1", "refusalx1"]
CONTENT_REJECTS = {"malformed": "malformed", "refusal": "refusal"}


def _requests(n_plain: int = 24):
    reqs = [ask(i) for i in range(n_plain)]
    reqs += [ask(100 + i, f) for i, f in enumerate(RECOVERABLE) if f]
    reqs += [ask(200 + i, f) for i, f in enumerate(CONTENT_REJECTS)]
    return reqs


def test_faults_end_in_results_or_rejects_and_a_rerun_sends_nothing(tmp_path):
    reqs = _requests()
    with FaultServer(timeout_sleep_s=1.5, slow_s=0.2) as srv:
        client = LLMClient(fast_settings(srv.base_url))
        first = client.run(reqs)
        sent = srv.requests
        assert srv.auth_headers == {f"Bearer {SENTINEL_KEY}"}  # the key from the environment was used
        # Every request ends in exactly one result or one reject with a reason.
        assert [r.id for r in first] == [r.id for r in reqs]
        for req, res in zip(reqs, first, strict=True):
            content = req.messages[0]["content"]
            code = next((c for f, c in CONTENT_REJECTS.items() if f"fault:{f}]]" in content), None)
            if code is None:
                assert res.ok, res.reason
                assert isinstance(res.value, Answer) and res.value.answer.startswith("reply to: question")
            else:
                assert res.code == code and res.reason and res.id in res.reason
        malformed = next(r for r in first if r.code == "malformed")
        assert '{"answer": "unterminated' in malformed.reason  # the raw text is kept in the reason
        assert "I'm sorry" in next(r for r in first if r.code == "refusal").reason
        stats = client.stats.as_dict()
        assert stats["requests"] == sent
        assert stats["retries"] >= 2 + 2 + 1 + 1 + 1  # 429x2, 500x2, timeout, body, drop
        assert stats["malformed_retries"] >= 2 + 1
        assert stats["results"] == len(reqs) - 2 and stats["rejected"] == {"malformed": 1, "refusal": 1}
        assert stats["prompt_tokens"] > 0 and stats["completion_tokens"] > 0 and stats["cache_hits"] == 0
        # Bounded: no request was tried more than (max_retries + 1) * (malformed_retries + 1) times.
        assert max(srv.attempts.values()) <= 4 * 2

        # A second run, by a new client (a new worker), sends zero requests and gets the same answers.
        again = LLMClient(fast_settings(srv.base_url))
        second = again.run(reqs)
        assert srv.requests == sent
        assert again.stats.cache_hits == len(reqs) and again.stats.requests == 0
        assert [(r.value, r.code) for r in second] == [(r.value, r.code) for r in first]
        assert all(r.cached for r in second)
    # ... and still with the endpoint down.
    down = LLMClient(fast_settings(srv.base_url)).run(reqs)
    assert [(r.value, r.code) for r in down] == [(r.value, r.code) for r in first]


def test_transport_failures_are_bounded_in_count_and_time_and_not_cached(tmp_path):
    reqs = [ask(1, "500"), ask(2, "429"), ask(3, "timeout"), ask(4, "echo_auth"), ask(5)]
    with FaultServer(timeout_sleep_s=1.0) as srv:
        settings = fast_settings(srv.base_url, timeout_s=0.3, max_retries=3)
        t0 = time.monotonic()
        results = LLMClient(settings).run(reqs)
        elapsed = time.monotonic() - t0
        assert [r.code for r in results] == ["unavailable"] * 4 + [None]
        for req, r in zip(reqs[:4], results[:4], strict=True):
            assert srv.attempts[req.messages[0]["content"]] == 4  # 1 + 3 retries
            assert "attempts failed" in r.reason and r.transient
        assert elapsed < 4 * 0.3 + 2  # timeouts: 4 attempts of 0.3 s in parallel with the rest
        # A time budget shorter than the retries cuts them short.
        budget = fast_settings(srv.base_url, timeout_s=0.3, max_retries=20, max_retry_time_s=1.0)
        t0 = time.monotonic()
        (late,) = LLMClient(budget).run([ask(6, "timeout")])
        assert late.code == "unavailable" and time.monotonic() - t0 < 1.0 + 0.5
        # Transport failures are not cached: a later run asks again.
        before = srv.requests
        LLMClient(settings).run(reqs[:1])
        assert srv.requests == before + 4


def test_api_key_never_reaches_a_written_file(tmp_path):
    log_file = tmp_path / "llm.log"
    handler = logging.FileHandler(log_file)
    logger = logging.getLogger("osum_data")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        batch_dir = tmp_path / "batch"
        with FaultServer() as srv:
            settings = fast_settings(srv.base_url, cache_dir=tmp_path / "cache")
            results = LLMClient(settings).run([ask(1), ask(2, "echo_auth"), ask(3, "malformed")])
            LLMClient(settings.model_copy(update={"batch_dir": batch_dir})).run([ask(4), ask(5)])
        from osum_data.llm.batch import export_batch

        export_batch(batch_dir, tmp_path / "out" / "batch.jsonl", AnswerCache(tmp_path / "cache"))
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert "upstream failed for Bearer ***" in results[1].reason  # the server echoed it; we masked it
    assert all(SENTINEL_KEY not in (r.reason or "") for r in results)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) >= 5 and log_file.stat().st_size > 0
    assert files_containing(tmp_path, SENTINEL_KEY) == []
    assert files_containing(tmp_path, SENTINEL_KEY[8:]) == []  # not even a fragment


def test_structured_output_falls_back_when_the_server_refuses_json_schema():
    with FaultServer(refuse_formats=("json_schema",)) as srv:
        client = LLMClient(fast_settings(srv.base_url, concurrency=2))
        results = client.run([ask(i) for i in range(10)])
        assert all(r.ok and isinstance(r.value, Answer) for r in results)
        assert client.stats.structured_fallbacks == 1
        assert srv.formats["json_schema"] <= 2 and srv.formats["json_object"] == 10
    # Refused by every form but the prompt: the schema goes into the prompt instead.
    with FaultServer(refuse_formats=("json_schema", "json_object")) as srv:
        client = LLMClient(fast_settings(srv.base_url, concurrency=1))
        assert all(r.ok for r in client.run([ask(i) for i in range(20, 23)]))
        assert srv.formats[None] == 3 and client.stats.structured_fallbacks == 3
    # A fixed form is never changed: the refusal becomes a reject, without retries.
    with FaultServer(refuse_formats=("json_schema",)) as srv:
        (r,) = LLMClient(fast_settings(srv.base_url, structured="json_schema")).run([ask(30)])
        assert r.code == "bad_request" and "response_format" in r.reason and srv.requests == 1


def test_text_answers_duplicates_and_cache_key_parts():
    with FaultServer() as srv:
        client = LLMClient(fast_settings(srv.base_url))
        plain = LLMRequest(id="a", messages=[{"role": "user", "content": "hello"}])
        twin = LLMRequest(id="b", messages=[{"role": "user", "content": "hello"}])
        ra, rb = client.run([plain, twin])
        assert ra.value == rb.value == "reply to: hello" and (ra.id, rb.id) == ("a", "b")
        assert srv.requests == 1  # identical requests in one call are sent once
        # Sampling parameters, template version and model are part of the key; the request id is not.
        keys = {
            client.key(plain),
            client.key(LLMRequest(id="a", messages=plain.messages, params={"temperature": 0.5})),
            client.key(LLMRequest(id="a", messages=plain.messages, template_version="2")),
            client.key(LLMRequest(id="a", messages=plain.messages, schema=Answer)),
            LLMClient(fast_settings(srv.base_url, model="other")).key(plain),
        }
        assert len(keys) == 5 and client.key(twin) == client.key(plain)
        with pytest.raises(ValueError, match="unknown sampling parameters"):
            client.key(LLMRequest(id="x", messages=plain.messages, params={"temprature": 1}))


def test_budget_starts_in_a_slot_and_cut_off_answers_are_rejected():
    with FaultServer(latency_s=0.1) as srv:
        # 12 requests one at a time take 1.2 s, more than each one's 0.5 s budget: none may give up.
        slow_queue = fast_settings(srv.base_url, concurrency=1, max_retry_time_s=0.5)
        assert all(r.ok for r in LLMClient(slow_queue).run([ask(i) for i in range(12)]))
        (cut,) = LLMClient(fast_settings(srv.base_url)).run([ask(50, "length")])
        assert cut.code == "malformed" and "cut off at max_tokens" in cut.reason
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.delenv("OPENAI_API_KEY")
    try:
        with pytest.raises(ConfigError, match="no LLM endpoint"):
            LLMClient(LLMSettings(model="m")).run([ask(60)])
    finally:
        monkeypatch.undo()


def test_endpoint_errors_stop_the_run_with_one_line():
    class Auth401(FaultServer):
        async def _chat(self, request):
            from aiohttp import web

            return web.json_response(
                {"error": {"message": f"bad key {request.headers['Authorization']}"}}, status=401
            )

    with Auth401() as srv, pytest.raises(LLMEndpointError) as e:
        LLMClient(fast_settings(srv.base_url)).run([ask(1)])
    assert "HTTP 401" in str(e.value) and SENTINEL_KEY not in str(e.value) and "\n" not in str(e.value)


def test_cache_survives_a_killed_writer(tmp_path):
    """A worker killed mid-run leaves only whole entries; the re-run asks for the missing ones only."""
    script = tmp_path / "writer.py"
    script.write_text(
        "import sys\n"
        f"sys.path[:0] = [{str(Path(__file__).parent)!r}]\n"
        "from llm_helpers import ask, fast_settings\n"
        "from osum_data.llm import LLMClient\n"
        "LLMClient(fast_settings(sys.argv[1], concurrency=2, cache_dir=sys.argv[2]))"
        ".run([ask(i) for i in range(40)])\n"
    )
    cache_dir = tmp_path / "cache"
    with FaultServer(latency_s=0.1) as srv:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
        }
        proc = subprocess.Popen([sys.executable, str(script), srv.base_url, str(cache_dir)], env=env)
        deadline = time.monotonic() + 60
        while len(list(cache_dir.rglob("*.json"))) < 6 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        entries = list(cache_dir.rglob("*.json"))
        assert 6 <= len(entries) < 40
        cache = AnswerCache(cache_dir)
        assert all(cache.get(p.stem)["status"] == "ok" for p in entries)  # whole entries only
        before = srv.requests
        results = LLMClient(fast_settings(srv.base_url, cache_dir=cache_dir)).run([ask(i) for i in range(40)])
        assert all(r.ok for r in results)
        assert srv.requests - before == 40 - len(entries)


def test_settings_validation_and_overrides(monkeypatch):
    s = settings_from_overrides(
        ["llm.base_url=http://gpu-box:8000/v1/", "llm.model=Qwen2-7B", "llm.concurrency=32"]
    )
    assert (s.base_url, s.model, s.concurrency) == ("http://gpu-box:8000/v1", "Qwen2-7B", 32)
    assert settings_from_overrides(["llm.embedded.n_ctx=4096"]).embedded.n_ctx == 4096
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        load_llm_settings({"api_key": "sk-123"})
    with pytest.raises(ConfigError, match=r"llm\.concurrency"):
        load_llm_settings({"concurrency": 0})
    with pytest.raises(ConfigError, match=r"llm\.base_url"):
        load_llm_settings({"base_url": "gpu-box:8000"})
    with pytest.raises(ConfigError, match=r"llm\.temprature"):
        load_llm_settings({"temprature": 0.3})
    with pytest.raises(ConfigError, match="only llm"):
        settings_from_overrides(["shard_size=3"])
    # The environment, as every OpenAI client reads it.
    assert configured_endpoint(LLMSettings(model="m")).base_url is None  # OPENAI_API_KEY alone: OpenAI
    monkeypatch.setenv("OPENAI_BASE_URL", "http://env-host:9000/v1")
    monkeypatch.setenv("OPENAI_MODEL", "env-model")
    ep = configured_endpoint(LLMSettings())
    assert (ep.base_url, ep.model) == ("http://env-host:9000/v1", "env-model")
    ep = configured_endpoint(LLMSettings(base_url="http://yaml-host/v1", model="yaml-model"))
    assert (ep.base_url, ep.model) == ("http://yaml-host/v1", "yaml-model")
    monkeypatch.delenv("OPENAI_MODEL")
    with pytest.raises(ConfigError, match="no model"):
        configured_endpoint(LLMSettings())
    monkeypatch.delenv("OPENAI_BASE_URL")
    monkeypatch.delenv("OPENAI_API_KEY")
    assert configured_endpoint(LLMSettings()) is None  # nothing configured: the embedded server
    with pytest.raises(ConfigError, match="no endpoint"):
        configured_endpoint(LLMSettings(model="m"))


def test_stats_merge_across_workers():
    a = LLMStats(requests=3, prompt_tokens=10, cache_hits=1)
    a.rejected["malformed"] += 1
    b = LLMStats(requests=2, completion_tokens=5)
    b.rejected["malformed"] += 2
    b.rejected["refusal"] += 1
    total = LLMStats.merge([a.as_dict(), b.as_dict()])
    assert total["requests"] == 5 and total["total_tokens"] == 15 and total["cache_hits"] == 1
    assert total["rejected"] == {"malformed": 3, "refusal": 1}


def test_a_reject_never_replaces_a_valid_answer_another_worker_cached(tmp_path):
    """Two workers ask the same question; the other one caches a valid answer while ours comes back
    malformed: the valid answer stays in the cache, and it is our result too."""
    settings = fast_settings("http://unused", cache_dir=tmp_path / "cache", malformed_retries=0)
    cache = AnswerCache(tmp_path / "cache")
    req = ask(1)

    def other_worker_wins(text: str, body: dict) -> str:
        cache.put(
            key, {"status": "ok", "text": '{"answer": "from the other worker"}', "model": "fault-model"}
        )
        return "not json"

    with FaultServer(reply_fn=other_worker_wins) as srv:
        client = LLMClient(settings.model_copy(update={"base_url": srv.base_url}))
        key = client.key(req)
        (result,) = client.run([req])
        assert srv.requests == 1
    assert result.ok and result.value.answer == "from the other worker"
    assert cache.get(key)["status"] == "ok"
    # Without a valid answer in the cache, the malformed verdict is cached as before.
    with FaultServer(reply_fn=lambda text, body: "not json") as srv:
        client = LLMClient(settings.model_copy(update={"base_url": srv.base_url}))
        (result,) = client.run([ask(2)])
    assert result.code == "malformed" and cache.get(client.key(ask(2)))["status"] == "rejected"
