"""A real two-node Ray cluster on loopback: `ray start --head` plus a second `ray start --address`
joining it (its own node IP, 127.0.0.2), then `osum-data run --address` spreads a pipeline's shards
over both nodes and writes the same bytes as a local run. The cluster uses Ray's token
authentication (a fresh token in the environment of every process), as a real cluster should.

Only the processes of this cluster are stopped afterwards (found by its own temp folder), never
other Ray instances on the machine.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from osum_data.demo import write_cycled_manifest
from tests.conftest import REPO, TESTS

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pids_of(marker: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def stop(marker: str) -> None:
    """Stop this cluster's processes (their command lines name its temp folder), by pid."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 2.0)):
        for pid in pids_of(marker):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + wait
        while pids_of(marker) and time.time() < deadline:
            time.sleep(0.5)


@pytest.fixture
def cluster(tmp_path):
    temp = Path(f"/tmp/osum-ray-{os.getpid()}-{secrets.token_hex(3)}")  # short: Unix socket paths are short
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)]),  # workers import this tree's stages
    }
    port = free_port()

    def ports() -> list[str]:
        names = (
            "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port",
            "runtime-env-agent-port",
            "metrics-export-port",
        )
        return [f"--{n}={free_port()}" for n in names]

    common = ["--num-cpus=1", f"--temp-dir={temp}", "--disable-usage-stats", *ports()]
    try:
        head = subprocess.run(
            [
                RAY,
                "start",
                "--head",
                "--node-ip-address=127.0.0.1",
                f"--port={port}",
                "--include-dashboard=false",
                f"--ray-client-server-port={free_port()}",
                *common,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert head.returncode == 0, head.stderr[-3000:]
        common = ["--num-cpus=1", f"--temp-dir={temp}", "--disable-usage-stats", *ports()]
        node = subprocess.run(
            [RAY, "start", f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.2", *common],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert node.returncode == 0, node.stderr[-3000:]
        yield f"127.0.0.1:{port}", env
    finally:
        stop(str(temp))
        subprocess.run(["rm", "-rf", str(temp)])


def test_pipeline_on_a_two_node_cluster(cluster, tmp_path):
    address, env = cluster
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import json, ray; ray.init(address='{address}'); "
            "print(json.dumps(sorted(n['NodeManagerAddress'] for n in ray.nodes() if n['Alive'])))",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr[-2000:]
    nodes = json.loads(check.stdout.strip().splitlines()[-1])
    assert len(nodes) == 2 and "127.0.0.2" in nodes

    manifest = write_cycled_manifest(tmp_path / "in.jsonl.gz", 60)
    pipeline = tmp_path / "asr_nodes.yaml"
    pipeline.write_text(
        (REPO / "pipelines" / "asr.yaml").read_text()
        + "  - stage: note_node\n"
        + "imports: [cluster_stages]\n"
    )
    common = [
        "--input",
        str(manifest),
        "--set",
        "audio_policy.min_sampling_rate=8000",
        "--set",
        "shard_size=6",
        "--no-progress",
    ]
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "osum_data.cli",
            "run",
            str(pipeline),
            "--output",
            str(tmp_path / "cluster"),
            "--address",
            address,
            "--workers",
            "2",
            *common,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    used = {p.read_text() for p in (tmp_path / "cluster" / "files").glob("*/note_node/node.txt")}
    assert len(used) == 2 and "127.0.0.2" in used, used  # shards ran on both nodes

    local_env = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
    local = subprocess.run(
        [
            sys.executable,
            "-m",
            "osum_data.cli",
            "run",
            str(pipeline),
            "--output",
            str(tmp_path / "local"),
            "--workers",
            "1",
            *common,
        ],
        cwd=REPO,
        env=local_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert local.returncode == 0, local.stderr[-3000:]
    for name in ("cuts.jsonl.gz", "rejects.jsonl.gz"):
        assert (tmp_path / "cluster" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
