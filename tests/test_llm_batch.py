"""OpenAI batch JSONL: collect during a run -> export -> (batch results written here, as the OpenAI Batch
API and `vllm run-batch` write them) -> import through validation into the cache -> a re-run with the
endpoint down reads every answer from the cache."""

from __future__ import annotations

import argparse
import json

import pytest
from llm_fault_server import FaultServer
from llm_helpers import SENTINEL_KEY, Answer, ask, fast_settings, files_containing, llm_env  # noqa: F401

from osum_data.cli_args import run_command
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
    return run_command(parser.parse_args(argv))  # the one way an osum-data command ends


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
    assert "6 lines = 5 imported (4 answers cached, 1 malformed cached as rejects) + 1 rejected" in report
    assert "1 failed (not cached)" in report and "results.jsonl:6: failed request" in report

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


# ---------------------------------------------------------------------------------------------------
# import hardening: no server needed; the requests file and its sidecar are written here.

GOOD = json.dumps({"answer": "fine"})
KEYS = [f"{i:064x}" for i in range(1, 4)]


def _requests_file(tmp_path) -> tuple:
    """A batch-export output for KEYS (answers validated as `Answer`), and a cache to import into."""
    from osum_data.llm.structured import schema_ref

    requests = tmp_path / "batch.jsonl"
    requests.write_text("".join(json.dumps({"custom_id": k}) + "\n" for k in KEYS))
    sidecar = {"format": 1, "schemas": {k: schema_ref(Answer) for k in KEYS}}
    (tmp_path / "batch.jsonl.osum.json").write_text(json.dumps(sidecar))
    return requests, AnswerCache(tmp_path / "cache")


def _results(path, *lines) -> str:
    """A results file of `lines` (dicts become result lines, strings are written as they are)."""
    with open(path, "w") as f:
        for line in lines:
            f.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    return str(path)


def _answer(key: str, content: str | None) -> dict:
    return _result_line({"custom_id": key, "body": {"model": "m"}}, content)


def test_import_never_replaces_a_valid_answer_with_a_malformed_one(tmp_path, capsys):
    requests, cache = _requests_file(tmp_path)
    good = _results(tmp_path / "good.jsonl", _answer(KEYS[0], GOOD), _answer(KEYS[1], "no json"))
    bad = _results(tmp_path / "bad.jsonl", _answer(KEYS[0], '{"style": "x"}'))
    cache_dir = f"--set=llm.cache_dir={cache.root}"
    assert _cli(["llm", "batch-import", good, "--requests", str(requests), cache_dir]) == 0
    capsys.readouterr()
    # A later results file with a malformed answer for the same request: the valid answer stays.
    assert _cli(["llm", "batch-import", bad, "--requests", str(requests), cache_dir]) == 1
    out, err = capsys.readouterr()
    assert cache.get(KEYS[0])["status"] == "ok" and cache.get(KEYS[0])["text"] == GOOD
    assert "1 kept existing valid answer" in out and "bad.jsonl:1: kept existing valid answer" in out
    assert "nothing imported from" in err and err.count("\n") == 1
    # A cached reject is no valid answer: a later malformed one replaces it, a valid one too.
    again = _results(tmp_path / "again.jsonl", _answer(KEYS[1], "still no json"), _answer(KEYS[2], GOOD))
    report = import_batch([again], requests, cache)
    assert (report.malformed, report.results, report.kept) == (1, 1, 0)
    assert cache.get(KEYS[1])["text"] == "still no json"
    fixed = import_batch([_results(tmp_path / "fixed.jsonl", _answer(KEYS[1], GOOD))], requests, cache)
    assert fixed.results == 1 and cache.get(KEYS[1])["status"] == "ok"


def test_import_reads_every_line_and_counts_the_bad_ones(tmp_path, capsys):
    requests, cache = _requests_file(tmp_path)
    failed = {"custom_id": KEYS[1], "response": None, "error": {"message": "rate limit"}}
    body_str = {"custom_id": KEYS[1], "response": {"status_code": 200, "body": "str"}}
    results = _results(
        tmp_path / "r.jsonl",
        _answer(KEYS[0], GOOD),  # 1 imported
        _answer("f" * 64, GOOD),  # 2 unknown custom_id
        "garbage line",  # 3 not JSON
        '"a json string"',  # 4 wrong shape (it crashed with AttributeError)
        "[1, 2]",  # 5 wrong shape
        json.dumps(failed),  # 6 failed request
        json.dumps(body_str),  # 7 a 200 whose body is no chat completion
        _answer(KEYS[2], "no json"),  # 8 imported as a cached reject
        '{"custom_id": "trunc',  # 9 torn
    )
    report = import_batch([results], requests, cache)
    assert report.lines == 9 == report.imported + report.rejected
    assert (report.results, report.malformed) == (1, 1)
    assert (report.unknown, report.bad_lines, report.failed, report.kept) == (1, 5, 1, 0)
    assert [where.rsplit(":", 1)[1] for where, _ in report.rejects] == ["2", "3", "4", "5", "6", "7", "9"]
    reasons = dict(report.rejects)
    assert "is not in batch.jsonl" in reasons[f"{results}:2"]
    assert "the line is a string, not a JSON object" in reasons[f"{results}:4"]
    assert "response.body is a string" in reasons[f"{results}:7"]
    assert cache.get(KEYS[2])["status"] == "rejected"  # line 8, after the bad lines, was read
    assert _cli(["llm", "batch-import", results, "--requests", str(requests)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("9 lines = 2 imported") and "r.jsonl:3: not JSON" in out

    # Nothing usable at all: exit 1 and say so; an empty file likewise.
    junk = _results(tmp_path / "junk.jsonl", "garbage", '"str"')
    assert _cli(["llm", "batch-import", junk, "--requests", str(requests)]) == 1
    assert "nothing imported from" in capsys.readouterr().err
    empty = _results(tmp_path / "empty.jsonl")
    assert _cli(["llm", "batch-import", empty, "--requests", str(requests)]) == 1
    assert "no result lines" in capsys.readouterr().err


def test_import_names_the_file_to_fix(tmp_path, capsys):
    requests, cache = _requests_file(tmp_path)
    good = _results(tmp_path / "good.jsonl", _answer(KEYS[0], GOOD))
    # A missing results file is named as given (not the sidecar), before anything is imported.
    with pytest.raises(BatchError, match=r"nope\.jsonl: no such results file") as e:
        import_batch([good, tmp_path / "nope.jsonl"], requests, cache)
    assert ".osum.json" not in str(e.value) and cache.get(KEYS[0]) is None
    with pytest.raises(BatchError, match=r"--requests .*nope\.jsonl: no such file"):
        import_batch([good], tmp_path / "nope.jsonl", cache)
    (tmp_path / "batch.jsonl.osum.json").write_text("{broken")
    assert _cli(["llm", "batch-import", good, "--requests", str(requests)]) == 2
    err = capsys.readouterr().err
    assert "batch.jsonl.osum.json: not valid JSON" in err and "batch-export` again" in err
    assert err.count("\n") == 1


def _pending(tmp_path):
    batch_dir = tmp_path / "collected"
    batch_dir.mkdir()
    line = {"custom_id": "k1", "body": {"model": "m", "messages": []}, "schema": None}
    (batch_dir / "pending-h-1-x.jsonl").write_text(json.dumps(line) + "\n")
    return batch_dir


def test_export_refuses_a_directory_out_and_a_line_limit_below_one(tmp_path, capsys):
    batch_dir, out_dir = _pending(tmp_path), tmp_path / "outdir"
    out_dir.mkdir()
    assert _cli(["llm", "batch-export", str(batch_dir), "--out", str(out_dir)]) == 2
    err = capsys.readouterr().err
    assert f"--out {out_dir} is a directory; give a file path" in err and err.count("\n") == 1
    assert not list(tmp_path.rglob("*.tmp")) and not list(out_dir.iterdir())
    for bad in ("0", "-1"):
        with pytest.raises(SystemExit) as e:
            _cli(
                [
                    "llm",
                    "batch-export",
                    str(batch_dir),
                    "--out",
                    str(tmp_path / "b.jsonl"),
                    "--max-lines",
                    bad,
                ]
            )
        assert e.value.code == 2
        assert f"argument --max-lines: must be at least 1, got {bad}" in capsys.readouterr().err
    with pytest.raises(BatchError, match="at least 1"):
        export_batch(batch_dir, tmp_path / "b.jsonl", max_lines=0)
    assert not (tmp_path / "b.jsonl").exists()


def test_a_failed_atomic_write_leaves_no_temporary_file(tmp_path):
    from osum_data.llm.batch import write_atomic

    (tmp_path / "taken").mkdir()
    with pytest.raises(IsADirectoryError):
        write_atomic(tmp_path / "taken", ["x\n"])
    assert not list(tmp_path.glob("*.tmp"))
