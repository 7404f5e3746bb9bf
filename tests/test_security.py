"""Untrusted inputs that must not execute or escape (issue 20, items 1, 2, 4, 5).

Everything here is the real shape of the attack: a manifest whose recording is a lhotse `command`
source (`touch MARKER; cat real.wav`) or a `url` source pointing at an HTTP server this test runs on
loopback, run through the real `osum-data run`, `export` and `mix` (Ray workers included); cut ids
with `../`, `/` and NUL written to real Shar tars and extracted with `tarfile`; YAML alias bombs at
every entry point; and checkpoint files holding a pickle whose `__reduce__` calls `os.system`.
The audio is real recorded speech (Debian's Asterisk prompts).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from osum_data.cli import main
from osum_data.manifest_io import read_jsonl, write_jsonl
from osum_data.sources import SourcePolicy, id_problem, source_problem

REPO = Path(__file__).resolve().parents[1]


# --- fixtures: real task samples, hostile sources, a loopback HTTP server -------------------------


@pytest.fixture(scope="module")
def samples() -> list[dict]:
    """Four real ASR task samples (16 kHz views of Asterisk prompts), as manifest dicts."""
    from training.demo import demo_task_cuts

    return [c.to_dict() for c in demo_task_cuts(4, max_duration=3.0)]


class _Server:
    """A loopback HTTP server that serves one wav file and records every request it gets."""

    def __init__(self, body: bytes):
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _wav_of(d: dict) -> str:
    return d["recording"]["sources"][0]["source"]


@pytest.fixture
def hostile(tmp_path, samples):
    """A manifest of 4 real samples: #0 plain, #1 a `command` source, #2 a `url` source on the
    loopback server, #3 a `command` source hidden in a MixedCut track. Yields (manifest, marker,
    server); the commands `touch` the marker (and then print the same wav the file source names)."""
    marker = tmp_path / "MARKER"
    wav = _wav_of(samples[1])
    server = _Server(Path(_wav_of(samples[2])).read_bytes())
    cuts = [json.loads(json.dumps(d)) for d in samples]
    cuts[1]["recording"]["sources"] = [
        {"type": "command", "channels": [0], "source": f"touch {marker}; cat {wav}"}
    ]
    cuts[2]["recording"]["sources"] = [
        {"type": "url", "channels": [0], "source": f"http://127.0.0.1:{server.port}/audio.wav"}
    ]
    track = json.loads(json.dumps(samples[3]))
    track["recording"]["sources"] = [
        {"type": "command", "channels": [0], "source": f"touch {marker}; cat {_wav_of(samples[3])}"}
    ]
    cuts[3] = {
        "id": samples[3]["id"],
        "tracks": [{"cut": track, "type": track.pop("type"), "offset": 0.0}],
        "custom": samples[3]["custom"],
        "type": "MixedCut",
    }
    manifest = tmp_path / "hostile.jsonl.gz"
    write_jsonl(manifest, cuts)
    yield manifest, marker, server
    server.close()


def _rejects(folder: Path, name: str = "rejects.jsonl.gz") -> dict[str, str]:
    return {r["id"]: r["custom"]["reject"]["code"] for r in read_jsonl(folder / name)}


def _ids(path: Path) -> list[str]:
    return [d["id"] for d in read_jsonl(path)]


# --- item 1: the source policy --------------------------------------------------------------------


def test_source_policy_finds_every_place_lhotse_reads_audio_or_features_from():
    """Unit view of the one check: recordings inside MixedCut tracks and custom fields, features and
    arrays with pipe/kaldiio/URL storage, shell characters in a .sph path, a URL as a file path."""
    rec = {"id": "r", "sampling_rate": 16000, "num_samples": 16000, "duration": 1.0, "channel_ids": [0]}

    def cut(**extra):
        return {"id": "c", "start": 0, "duration": 1.0, "channel": 0, "type": "MonoCut", **extra}

    def recording(kind, source):
        return {**rec, "sources": [{"type": kind, "channels": [0], "source": source}]}

    default = SourcePolicy()
    assert source_problem(cut(recording=recording("file", "/data/a.wav")), default) is None
    assert source_problem(cut(recording=recording("memory", "")), default) is None
    assert source_problem(cut(recording=recording("command", "sox x -")), default)[0] == "unsafe_source:command"
    assert source_problem(cut(recording=recording("url", "file:///etc/shadow")), default)[0] == "unsafe_source:url"
    assert source_problem(cut(recording=recording("url", "pipe:touch x")), default)[0] == "unsafe_source:command"
    assert source_problem(cut(recording=recording("file", "http://h/a.wav")), default)[0] == "unsafe_source:file_url"
    assert (
        source_problem(cut(recording=recording("file", "a;touch x;.sph")), default)[0]
        == "unsafe_source:shell_path"
    )
    assert source_problem(cut(recording=recording("file", "/data/ok_1.sph")), default) is None
    custom_rec = cut(custom={"clip": recording("command", "rm -rf /")})
    assert source_problem(custom_rec, default)[0] == "unsafe_source:command"
    mixed = {
        "id": "m",
        "type": "MixedCut",
        "tracks": [{"cut": cut(recording=recording("url", "https://x.org/a.wav")), "offset": 0}],
    }
    assert source_problem(mixed, default)[0] == "unsafe_source:url"
    feats = {"storage_type": "lilcom_files", "storage_path": "pipe:touch x;", "storage_key": "k"}
    assert source_problem(cut(features=feats), default)[0] == "unsafe_source:command"
    arr = {"array": {"storage_type": "kaldiio", "storage_path": "x.ark", "storage_key": "k"}}
    assert source_problem(cut(custom={"emb": arr}), default)[0] == "unsafe_source:command"
    local = {"storage_type": "lilcom_chunky", "storage_path": "/f/x.llc", "storage_key": "0,10"}
    assert source_problem(cut(features=local), default) is None

    opted = SourcePolicy(allow_command=True, urls=("https://x.org",))
    assert source_problem(mixed, opted) is None
    assert source_problem(cut(recording=recording("command", "sox x -")), opted) is None
    assert source_problem(cut(recording=recording("url", "https://y.org/a.wav")), opted)[0] == "unsafe_source:url"
    assert source_problem(cut(recording=recording("url", "https://x.org:444/a")), opted)[0] == "unsafe_source:url"
    assert source_problem(cut(recording=recording("url", "file:///etc/shadow")), opted)[0] == "unsafe_source:url"


@pytest.mark.slow
def test_run_neither_runs_commands_nor_fetches_urls_unless_allowed(tmp_path, hostile, ray_session):
    manifest, marker, server = hostile
    base = ["run", "pipelines/asr.yaml", "--input", str(manifest), "--workers", "2", "--no-progress"]
    base += ["--set", "audio_policy.min_sampling_rate=8000"]
    out = tmp_path / "default"
    assert main([*base, "--output", str(out)]) == 0
    assert not marker.exists() and server.requests == []
    ids = _ids(manifest)
    assert _ids(out / "cuts.jsonl.gz") == [ids[0]]
    assert _rejects(out) == {
        ids[1]: "unsafe_source:command",
        ids[2]: "unsafe_source:url",
        ids[3]: "unsafe_source:command",
    }
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rejected_by_reason"] == {"input:unsafe_source:command": 2, "input:unsafe_source:url": 1}
    assert summary["in"] == summary["out"] + summary["rejected"] == 4

    allowed = tmp_path / "allowed"
    url = f"http://127.0.0.1:{server.port}"
    assert main([*base, "--output", str(allowed), "--allow-command-sources", "--allow-url-sources", url]) == 0
    assert marker.exists() and server.requests  # the user opted in: both really happened
    assert _ids(allowed / "cuts.jsonl.gz") == ids


@pytest.mark.slow
def test_export_neither_runs_commands_nor_fetches_urls_unless_allowed(tmp_path, hostile, ray_session):
    manifest, marker, server = hostile
    out = tmp_path / "export"
    assert main(["export", "sharegpt", str(manifest), str(out), "--workers", "2", "--no-progress"]) == 0
    assert not marker.exists() and server.requests == []
    codes = _rejects(out)
    assert sorted(codes.values()) == ["unsafe_source:command", "unsafe_source:command", "unsafe_source:url"]

    allowed = tmp_path / "export-allowed"
    url = f"http://127.0.0.1:{server.port}"
    args = ["export", "sharegpt", str(manifest), str(allowed), "--workers", "2", "--no-progress"]
    assert main([*args, "--allow-command-sources", "--allow-url-sources", url]) == 0
    assert marker.exists() and server.requests
    assert _rejects(allowed) == {}


def _mix_yaml(tmp_path: Path, manifest: Path, name: str = "mix.yaml") -> Path:
    path = tmp_path / name
    path.write_text(
        f"audio: flac\nshuffle_buffer: 0\nsplits: {{dev: 0.0, test: 0.0, min_cuts: 0}}\n"
        f"tasks:\n  asr:\n    datasets: [{{name: hostile, manifest: {manifest}}}]\n"
    )
    return path


@pytest.mark.slow
def test_mix_neither_runs_commands_nor_fetches_urls_unless_allowed(tmp_path, hostile, ray_session):
    manifest, marker, server = hostile
    monos = tmp_path / "monos.jsonl.gz"  # the mix takes MonoCuts (task samples) only
    write_jsonl(monos, list(read_jsonl(manifest))[:3])
    mix = _mix_yaml(tmp_path, monos)
    out = tmp_path / "mix"
    assert main(["mix", str(mix), "--output", str(out), "--workers", "2", "--no-progress"]) == 0
    assert not marker.exists() and server.requests == []
    assert sorted(_rejects(out).values()) == ["unsafe_source:command", "unsafe_source:url"]
    assert json.loads((out / "summary.json").read_text())["out"] == 1

    allowed = tmp_path / "mix-allowed"
    url = f"http://127.0.0.1:{server.port}"
    args = ["mix", str(mix), "--output", str(allowed), "--workers", "2", "--no-progress"]
    assert main([*args, "--allow-command-sources", "--allow-url-sources", url]) == 0
    assert marker.exists() and server.requests
    # Lhotse's Shar writer cannot name the format of `command` audio (its own limit, after running
    # the command): that cut is an `audio` reject of the writer; the URL one is in the Shar.
    assert _rejects(allowed / "run") == {f"hostile.{_ids(monos)[1]}": "audio"}
    assert json.loads((allowed / "summary.json").read_text())["out"] == 2


def test_trainer_skips_unsafe_cuts_before_decoding(tmp_path, hostile, monkeypatch):
    """The trainer's reader (training.data.CutFilter, in front of every decode) skips them, counted."""
    from lhotse import CutSet

    from training.data import CutFilter

    manifest, marker, server = hostile
    keep = CutFilter(max_duration=30.0)
    kept = [c.id for c in CutSet.from_jsonl_lazy(manifest) if keep(c)]
    assert kept == [_ids(manifest)[0]]
    assert keep.counts == {"unsafe_source:command": 2, "unsafe_source:url": 1}
    monkeypatch.setenv("OSUM_ALLOW_COMMAND_SOURCES", "1")
    monkeypatch.setenv("OSUM_ALLOW_URL_SOURCES", f"http://127.0.0.1:{server.port}")
    keep = CutFilter(max_duration=30.0)
    cuts = [c for c in CutSet.from_jsonl_lazy(manifest) if keep(c)]
    assert len(cuts) == 4
    assert cuts[1].load_audio().shape[-1] > 0 and marker.exists()
