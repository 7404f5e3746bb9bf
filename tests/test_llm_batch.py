"""OpenAI batch JSONL: collect during a run -> export -> (batch results written here, as the OpenAI Batch
API and `vllm run-batch` write them) -> import through validation into the cache -> a re-run with the
endpoint down reads every answer from the cache."""

from __future__ import annotations

import argparse
import json

import pytest
from llm_fault_server import FaultServer
from llm_helpers import SENTINEL_KEY, Answer, ask, fast_settings, files_containing, llm_env  # noqa: F401

from osum_data.llm import LLMClient
from osum_data.llm.batch import BatchError, export_batch, import_batch
from osum_data.llm.cache import AnswerCache
from osum_data.llm.cli import add_llm_commands
from osum_data.llm.server import free_port

pytestmark = pytest.mark.usefixtures("llm_env")


def _result_line(req_line: dict, content: str | None, status: int = 200) -> dict:
    """One line of a batch output file, in the format both OpenAI and vLLM write."""
    body = {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "model": req_line["body"]["model"],
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }
    if status != 200:
        return {
            "id": "batch_req_x",
            "custom_id": req_line["custom_id"],
            "response": {
                "status_code": status,
                "request_id": "r",
                "body": {"error": {"message": "overloaded"}},
            },
            "error": None,
        }
    return {
        "id": "batch_req_x",
        "custom_id": req_line["custom_id"],
        "response": {"status_code": 200, "request_id": "r", "body": body},
        "error": None,
    }


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="osum-data")
    add_llm_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_batch_round_trip_through_validation_and_cache(tmp_path, capsys):
    batch_dir, cache_dir = tmp_path / "collected", tmp_path / "cache"
    down = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: any request would fail
    reqs = [ask(i) for i in range(6)] + [ask(0)]  # one duplicate
    settings = fast_settings(down, cache_dir=cache_dir, batch_dir=batch_dir, max_retries=1)
    # Collect: two workers (two clients) write their own pending files; nothing is sent.
    pending = LLMClient(settings).run(reqs[:4]) + LLMClient(settings).run(reqs[3:])
    assert {r.code for r in pending} == {"batch_pending"} and all(r.transient for r in pending)
    assert len(list(batch_dir.glob("pending-*.jsonl"))) == 2

    out = tmp_path / "upload" / "batch.jsonl"
    set_cache = f"--set=llm.cache_dir={cache_dir}"
    assert _cli(["llm", "batch-export", str(batch_dir), "--out", str(out), set_cache]) == 0
    assert "6 requests" in capsys.readouterr().out
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 6  # deduplicated across workers and within
    for line in lines:
        assert set(line) == {"custom_id", "method", "url", "body"}  # what the Batch API accepts
        assert line["method"] == "POST" and line["url"] == "/v1/chat/completions"
        assert line["body"]["model"] == "fault-model"
        assert line["body"]["response_format"]["type"] == "json_schema"
        assert line["body"]["messages"][0]["role"] == "user"

    # The batch ran elsewhere: 4 good answers, 1 malformed, 1 server error.
    answers = [json.dumps({"answer": f"batch {i}"}) for i in range(4)] + ["not json at all", None]
    results = tmp_path / "results.jsonl"
    with open(results, "w") as f:
        for i, (line, content) in enumerate(zip(lines, answers, strict=True)):
            f.write(json.dumps(_result_line(line, content, status=503 if i == 5 else 200)) + "\n")
    assert _cli(["llm", "batch-import", str(results), "--requests", str(out), set_cache]) == 0
    report = capsys.readouterr().out
    assert "4 results cached, 1 malformed" in report and "1 failed" in report

    # The re-run, endpoint down: five answers come from the cache (4 validated, 1 cached reject with
    # its raw text); the one the batch failed is asked again (and fails: nothing listens).
    client = LLMClient(settings.model_copy(update={"batch_dir": None}))
    by_key = {client.key(r): r for r in reqs}
    final = {
        by_key[line["custom_id"]].id: r for line in lines for r in client.run([by_key[line["custom_id"]]])
    }
    codes = sorted((r.code or "ok") for r in final.values())
    assert codes == ["malformed", "ok", "ok", "ok", "ok", "unavailable"]
    assert all(
        isinstance(r.value, Answer) and r.value.answer.startswith("batch") for r in final.values() if r.ok
    )
    bad = next(r for r in final.values() if r.code == "malformed")
    assert "not json at all" in bad.reason and bad.cached
    assert client.stats.cache_hits == 5
    assert files_containing(tmp_path, SENTINEL_KEY) == []

    # A second export leaves out what the cache now holds.
    report = export_batch(batch_dir, tmp_path / "again.jsonl", AnswerCache(cache_dir))
    assert report.requests == 1 and report.already_cached == 5


def test_batch_import_errors_are_one_line(tmp_path):
    (tmp_path / "r.jsonl").write_text('{"custom_id": "x"}\n')
    with pytest.raises(BatchError, match="batch-export"):
        import_batch([tmp_path / "r.jsonl"], tmp_path / "missing.jsonl", AnswerCache(tmp_path))
    with pytest.raises(BatchError, match="no pending"):
        export_batch(tmp_path / "empty", tmp_path / "o.jsonl")
    assert _cli(["llm", "batch-export", str(tmp_path / "empty"), "--out", str(tmp_path / "o.jsonl")]) == 2


def test_export_splits_at_the_line_limit_and_skips_torn_lines(tmp_path):
    batch_dir = tmp_path / "collected"
    with FaultServer() as srv:  # never asked: batch mode
        LLMClient(fast_settings(srv.base_url, batch_dir=batch_dir)).run([ask(i) for i in range(5)])
        assert srv.requests == 0
    part = next(batch_dir.glob("pending-*.jsonl"))
    with open(part, "a") as f:
        f.write('{"custom_id": "torn", "bo')  # a worker killed mid-line
    report = export_batch(batch_dir, tmp_path / "b.jsonl", max_lines=2)
    assert report.requests == 5 and report.torn_lines == 1
    assert [p.name for p in report.files] == ["b.000.jsonl", "b.001.jsonl", "b.002.jsonl"]
    assert sum(len(p.read_text().splitlines()) for p in report.files) == 5
