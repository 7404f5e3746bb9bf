"""Untrusted inputs that must not execute or escape (issue 20, items 1, 2, 4, 5).

Everything here is the real shape of the attack: a manifest whose recording is a lhotse `command`
source (`touch MARKER; cat real.wav`) or a `url` source pointing at an HTTP server this test runs on
loopback, run through the real `osum-data run`, `export` and `mix` (Ray workers included); cut ids
with `../`, `/` and NUL written to real Shar tars and extracted with `tarfile`; YAML alias bombs at
every entry point; and checkpoint files holding a pickle whose `__reduce__` calls `os.system`.
The audio is real recorded speech (Debian's Asterisk prompts).
"""

from __future__ import annotations

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

    def code(kind, source, policy):
        problem = source_problem(cut(recording=recording(kind, source)), policy)
        return problem and problem[0]

    default = SourcePolicy()
    assert code("file", "/data/a.wav", default) is None
    assert code("memory", "", default) is None
    assert code("command", "sox x -", default) == "unsafe_source:command"
    assert code("url", "file:///etc/shadow", default) == "unsafe_source:url"
    assert code("url", "pipe:touch x", default) == "unsafe_source:command"
    assert code("file", "http://h/a.wav", default) == "unsafe_source:file_url"
    assert code("file", "a;touch x;.sph", default) == "unsafe_source:shell_path"
    assert code("file", "/data/ok_1.sph", default) is None
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
    assert code("command", "sox x -", opted) is None
    assert code("url", "https://y.org/a.wav", opted) == "unsafe_source:url"
    assert code("url", "https://x.org:444/a", opted) == "unsafe_source:url"
    assert code("url", "file:///etc/shadow", opted) == "unsafe_source:url"


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


# --- item 4: cut ids as tar members and file names ------------------------------------------------

UNSAFE_IDS = ["../../../../escape", "a/b/c", "nul\x00id"]


def test_id_problem_refuses_control_characters_empty_and_overlong_ids():
    assert id_problem("spk1/utt-01 ünïcode") is None  # '/' and non-ASCII are fine in an id
    assert "U+0000" in id_problem("nul\x00id")
    assert "U+000A" in id_problem("two\nlines")
    assert "U+2028" in id_problem("line\u2028sep")
    assert id_problem("") == "empty cut id"
    assert "characters" in id_problem("x" * 2000)


@pytest.mark.slow
def test_mix_shar_members_stay_in_the_folder_a_tar_is_extracted_to(tmp_path, samples, ray_session):
    """Ids with `../`, `/` and NUL through a real `mix` with audio: every Shar tar, extracted with
    plain `tarfile.extractall` into a folder, writes only inside it; the Shar reads back with
    lhotse's `CutSet.from_shar`; the NUL id is a reject with its reason (and the mix says so)."""
    from lhotse import CutSet

    cuts = [json.loads(json.dumps(d)) for d in samples]
    for d, new in zip(cuts, UNSAFE_IDS, strict=False):
        d["id"] = new
    manifest = tmp_path / "ids.jsonl.gz"
    write_jsonl(manifest, cuts)
    out = tmp_path / "mix"
    assert main(["mix", str(_mix_yaml(tmp_path, manifest)), "--output", str(out), "--workers", "2"]) == 0
    rejects = {r["id"]: r["custom"]["reject"] for r in read_jsonl(out / "rejects.jsonl.gz")}
    assert list(rejects) == ["nul\x00id"] and rejects["nul\x00id"]["code"] == "unsafe_id"
    assert "U+0000" in rejects["nul\x00id"]["reason"]

    dest = tmp_path / "d1" / "d2" / "d3" / "d4" / "extract"
    tars = sorted(out.rglob("recording.*.tar"))
    assert tars
    for t in tars:
        with tarfile.open(t) as tar:
            tar.extractall(dest)  # noqa: S202 (the point: what a user does with a downloaded tar)
    inside = {p for p in dest.rglob("*") if p.is_file()}
    everywhere = {p for p in tmp_path.rglob("*") if p.is_file() and "escape" in p.name}
    assert everywhere <= inside and len(inside) == 2 * 3  # data + metadata member per cut
    assert all(p.parent == dest for p in inside)  # no nested members either

    shar = list(CutSet.from_shar(in_dir=out / "train"))
    assert sorted(c.custom["mix"]["source_id"] for c in shar) == sorted([*UNSAFE_IDS[:2], cuts[3]["id"]])
    assert all(c.load_audio().shape[-1] > 0 for c in shar)


def test_run_rejects_a_nul_id_before_any_stage(tmp_path, samples):
    """The shard processor (what each Ray actor runs) rejects the id at input, counted."""
    from osum_data.run.config import load_pipeline
    from osum_data.run.inputs import iter_shards, scan
    from osum_data.run.shard import ShardProcessor

    cuts = [json.loads(json.dumps(d)) for d in samples[:2]]
    cuts[1]["id"] = "nul\x00id"
    manifest = tmp_path / "nul.jsonl.gz"
    write_jsonl(manifest, cuts)
    config = load_pipeline(REPO / "pipelines/asr.yaml", ["audio_policy.min_sampling_rate=8000"])
    [shard] = list(iter_shards(scan(manifest), 10, config.hash()))
    stats = ShardProcessor(config, tmp_path / "out").run_shard(shard)
    assert stats["rejected_by_reason"] == {"input:unsafe_id": 1} and stats["out"] == 1
    [rec] = read_jsonl(tmp_path / "out" / "shards" / "rejects.000000.jsonl.gz")
    assert rec["custom"]["reject"]["code"] == "unsafe_id" and "U+0000" in rec["custom"]["reject"]["reason"]


def test_prepare_tsv_rejects_ids_with_control_characters(tmp_path):
    from tests.corpus_fixtures import make_tsv_audio

    make_tsv_audio(tmp_path / "corpus")
    (tmp_path / "corpus" / "metadata.tsv").write_text(
        "id\taudio\ttext\nok\taudio/hello.wav\thello world\nbad\x00id\taudio/thanks.wav\tthank you\n",
        encoding="utf-8",
    )
    assert main(["prepare", "tsv", str(tmp_path / "corpus"), str(tmp_path / "out")]) == 0
    assert _ids(tmp_path / "out" / "cuts.jsonl.gz") == ["ok"]
    [rec] = read_jsonl(tmp_path / "out" / "rejects.jsonl.gz")
    assert rec["id"] == "bad\x00id" and rec["custom"]["reject"]["code"] == "unsafe_id"
    assert rec["custom"]["reject"]["stage"] == "prepare:tsv" and rec["custom"]["row"] == 2


# --- item 5: YAML alias bombs ---------------------------------------------------------------------

BOMB_VALUE = (
    "[&a [lol,lol,lol,lol,lol,lol,lol,lol,lol], "
    + ", ".join(f"&{x} [{','.join([f'*{p}'] * 9)}]" for p, x in zip("abcdefgh", "bcdefghi", strict=True))
    + "]"
)

ENTRY_POINTS = r"""
import json, resource, sys, time
from pathlib import Path
from osum_data.yaml_config import ConfigError
from osum_data.run.config import load_pipeline
from osum_data.mix.config import load_mix_config
from osum_data.plan import load_plan
from training.config import load_config
load_pipeline("pipelines/asr.yaml")  # (imports every stage module before the cap)
vm = int(next(ln.split()[1] for ln in open("/proc/self/status") if ln.startswith("VmSize:"))) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (2 << 30), vm + (2 << 30)))  # 2 GB more than now
d, bomb = Path(sys.argv[1]), sys.argv[2]
calls = {
    "pipeline": lambda: load_pipeline(d / "pipeline.yaml"),
    "stage entry": lambda: load_pipeline(d / "stage.yaml"),
    "--set value": lambda: load_pipeline("pipelines/asr.yaml", ["normalize_text.lowercase=" + bomb]),
    "mix": lambda: load_mix_config(d / "mix.yaml"),
    "plan": lambda: load_plan(d / "plan.yaml"),
    "trainer": lambda: load_config(d / "train.yaml"),
    "trainer --set": lambda: load_config("training/configs/tiny.yaml", ["optim.lr=" + bomb]),
}
out = {}
for name, call in calls.items():
    t = time.perf_counter()
    try:
        call()
        out[name] = ["accepted", time.perf_counter() - t]
    except ConfigError as e:
        out[name] = [str(e), time.perf_counter() - t]
    except BaseException as e:
        out[name] = [f"{type(e).__name__}: {str(e)[:200]}", time.perf_counter() - t]
print(json.dumps(out))
"""


def test_every_yaml_entry_point_refuses_an_alias_bomb_at_once(tmp_path):
    """A billion-laughs document (9^9 strings from ten lines) in a pipeline, a stage entry, a
    `--set` value, a mix, a plan and a trainer config: refused in well under a second each, with
    one short line. Run in a child capped at 2 GB more memory (the old code ran out of memory)."""
    bomb = BOMB_VALUE  # each file puts it under a key the file knows (the type is wrong, on purpose)
    (tmp_path / "pipeline.yaml").write_text(
        f"name: x\ndescription: {bomb}\nstages: [{{stage: normalize_text}}]\n"
    )
    (tmp_path / "stage.yaml").write_text(f"stages:\n- stage: normalize_text\n  lowercase: {bomb}\n")
    (tmp_path / "mix.yaml").write_text(f"name: {bomb}\ntasks: {{asr: {{datasets: [x]}}}}\n")
    (tmp_path / "plan.yaml").write_text(f"description: {bomb}\nruns: []\n")
    (tmp_path / "train.yaml").write_text(f"seed: {bomb}\n")
    proc = subprocess.run(
        [sys.executable, "-c", ENTRY_POINTS, str(tmp_path), BOMB_VALUE],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(results) == 7
    for name, (message, seconds) in results.items():
        assert "expands to more than" in message, (name, message)
        assert seconds < 0.5, (name, seconds)
        assert "\n" not in message and len(message) < 300, (name, message)


def test_cli_refuses_a_bomb_with_one_line(tmp_path, capsys):
    (tmp_path / "p.yaml").write_text(f"description: {BOMB_VALUE}\nstages: [{{stage: normalize_text}}]\n")
    rc = main(["run", str(tmp_path / "p.yaml"), "--input", "x.jsonl", "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "p.yaml: line 1: the YAML expands" in err


def test_recursive_alias_is_refused():
    from osum_data.yaml_config import ConfigError, load_yaml

    with pytest.raises(ConfigError, match="refers to itself"):
        load_yaml("a: &a [1, *a]\n")


# --- item 2: checkpoints that run code ------------------------------------------------------------


class _Payload:
    """Unpickling this calls os.system: what a hostile checkpoint holds."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


TINY = REPO / "training" / "configs" / "tiny.yaml"


def _checkpoint(tmp_path: Path, evil: str, marker: Path) -> Path:
    """A finished checkpoint folder (DONE) whose `evil` file holds the payload; the others hold
    what a real save holds (model.pt: no trainable weights of another shape, i.e. none)."""
    import torch

    step = tmp_path / "run" / "checkpoints" / "step-0000001"
    step.mkdir(parents=True)
    sgd = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(sgd, lambda s: 1.0).state_dict()
    files = {
        "model.pt": {},
        "optimizer.pt": {"state": {}, "param_groups": []},
        "trainer.pt": {"step": 1, "scheduler": scheduler, "config": {"seed": 0}, "extra": {}},
        "rank-0.pt": {"rng": {}, "position": {"epoch": 0, "in_epoch": 1, "index": 1, "stream": None}},
    }
    for name, content in files.items():
        torch.save({"payload": _Payload(marker)} if name == evil else content, step / name)
    (step / "DONE").touch()
    return step


@pytest.mark.parametrize("evil", ["optimizer.pt", "trainer.pt", "rank-0.pt"])
def test_resume_refuses_a_checkpoint_that_would_run_code(tmp_path, evil, capsys, samples):
    from training.train import main as train_main

    marker = tmp_path / "MARKER"
    _checkpoint(tmp_path, evil, marker)
    manifest = tmp_path / "train.jsonl.gz"
    write_jsonl(manifest, samples)
    rc = train_main(
        ["--config", str(TINY), "--train", str(manifest), "--output", str(tmp_path / "run"), "--resume"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and not marker.exists()
    assert len(err) == 1 and err[0].startswith("osum-train: error: ") and evil in err[0]
    assert "refused" in err[0] and "posix.system" in err[0]


def test_decode_export_and_convert_refuse_a_checkpoint_that_would_run_code(tmp_path, capsys, samples):
    from training.decode import main as decode_main
    from training.export import main as export_main
    from training.osum_checkpoint import main as convert_main

    marker = tmp_path / "MARKER"
    step = _checkpoint(tmp_path, "model.pt", marker)
    manifest = tmp_path / "cuts.jsonl.gz"
    write_jsonl(manifest, samples)
    runs = {
        "osum-decode": lambda: decode_main(
            [
                "--config",
                str(TINY),
                "--checkpoint",
                str(step),
                "--cuts",
                str(manifest),
                "--output",
                str(tmp_path / "d"),
            ]
        ),
        "osum-export": lambda: export_main(
            ["--config", str(TINY), "--checkpoint", str(step), "--output", str(tmp_path / "e")]
        ),
        "osum-convert": lambda: convert_main(
            ["--osum", str(step / "model.pt"), "--output", str(tmp_path / "c")]
        ),
    }
    for prog, run in runs.items():
        capsys.readouterr()
        assert run() == 1, prog
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"{prog}: error: ") and "model.pt" in err[0], (prog, err)
    assert not marker.exists()


def test_a_saved_checkpoint_loads_with_weights_only_and_restores_rng(tmp_path):
    """What save_checkpoint writes per rank is plain data: it loads with weights_only=True, and the
    RNG streams continue exactly where they were."""
    import random

    import numpy as np
    import torch

    from training.checkpoint import rng_state, safe_load, set_rng_state

    torch.save({"rng": rng_state()}, tmp_path / "rank-0.pt")
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    set_rng_state(safe_load(tmp_path / "rank-0.pt")["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_trainer_refuses_a_shar_fields_file_with_shell_commands(tmp_path, monkeypatch):
    """A downloaded Shar fields file naming `pipe:` shards would run them through lhotse's opener."""
    from training.stream import Source, resolve

    marker = tmp_path / "MARKER"
    fields = tmp_path / "fields.yaml"
    fields.write_text(f"cuts: ['pipe:touch {marker}; cat x.jsonl.gz']\n")
    with pytest.raises(ValueError, match="runs a shell command; refused"):
        Source(fields)
    assert not marker.exists()
    monkeypatch.setenv("OSUM_ALLOW_COMMAND_SOURCES", "1")
    assert resolve(fields).shar["cuts"][0].startswith("pipe:")
