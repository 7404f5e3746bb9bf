"""Issue 20, data integrity and clarity: exports that lost most of a shard, superseded runs whose
audio was overwritten, a deeply nested input line that killed the run, `prepare` over a run folder,
header typos that dropped labels, undecodable corpus files, mathtext in report labels, and how the
commands end on SIGTERM. Each test is written against the fault as the hostile-user battery met it."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from osum_data.manifest_io import read_jsonl, write_jsonl
from tests.conftest import REPO, TESTS
from tests.test_runner import demo_like_manifest


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)])}


def _cli(*args, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "osum_data.cli", *map(str, args)]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _md5(path: str | Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def _sources(manifest: Path) -> dict[str, str]:
    """cut id -> its (first) audio file."""
    return {
        d["id"]: d["recording"]["sources"][0]["source"] for d in read_jsonl(manifest) if d.get("recording")
    }


# --- item 6: exports keep every kept cut's files ------------------------------------------------


@pytest.fixture(scope="module")
def templated(tmp_path_factory, ray_session):
    """8 ASR task samples over real speech (the template stage run for real)."""
    from osum_data.run.config import build_config
    from osum_data.run.runner import run_pipeline

    tmp = tmp_path_factory.mktemp("templated")
    cfg = build_config({"name": "t", "shard_size": 8, "stages": [{"stage": "template", "task": "asr"}]})
    run_pipeline(cfg, demo_like_manifest(tmp, 8), tmp / "run", workers=1, progress=False)
    cuts = list(read_jsonl(tmp / "run" / "cuts.jsonl.gz"))
    assert len(cuts) == 8
    return cuts


def _with_broken(cuts: list[dict], tmp_path: Path, break_it) -> Path:
    cuts = json.loads(json.dumps(cuts))
    break_it(cuts[3])
    path = tmp_path / "in.jsonl.gz"
    write_jsonl(path, cuts)
    return path


@pytest.mark.parametrize("fmt", ["sharegpt", "nemo"])
def test_an_export_with_one_broken_recording_keeps_the_other_cuts_files(tmp_path, templated, fmt):
    """Before: a recording whose duration is no number made the stage raise; the runner retried the
    shard cut by cut and every call emptied the shard's files, so `Exported 7 of 8 cuts` (exit 0)
    wrote 1 line and 1 audio file."""
    from osum_data.export.formats import export

    manifest = _with_broken(templated, tmp_path, lambda c: c["recording"].update(duration="abc"))
    summary = export(fmt, manifest, tmp_path / "out", workers=1)
    out = tmp_path / "out"
    lines = (out / ("train.jsonl" if fmt == "sharegpt" else "train_manifest.json")).read_text().splitlines()
    assert (summary["exported"], summary["rejected"], len(lines)) == (7, 1, 7)
    assert len(list((out / "audio").glob("*.flac"))) == 7
    assert {json.loads(x)["id"] for x in lines} == {c["id"] for c in templated} - {templated[3]["id"]}
    (rej,) = read_jsonl(out / "rejects.jsonl.gz")
    assert rej["id"] == templated[3]["id"] and "TypeError" in rej["custom"]["reject"]["reason"]


def test_each_call_of_an_export_stage_adds_a_part_and_a_failed_call_adds_none(tmp_path):
    """What makes the stages retry-safe: a call's files are published only when it returns."""
    from osum_data.export.engine import call_part, part_dirs

    files = tmp_path / "run" / "files" / "000000" / "export_x"
    files.mkdir(parents=True)
    with pytest.raises(RuntimeError), call_part(files) as d:  # the batch: writes, then one cut fails
        (d / "a.txt").write_text("written before the batch raised")
        raise RuntimeError("one cut of the batch")
    for name in ("a", "c", "d"):  # the retries, one cut per call
        with call_part(files) as d:
            (d / f"{name}.txt").write_text(name)
    with call_part(files):
        pass  # a call that wrote nothing publishes nothing
    parts = [p for _, p in part_dirs(tmp_path / "run", "export_x", 1)]
    assert [sorted(x.name for x in p.iterdir()) for p in parts] == [["a.txt"], ["c.txt"], ["d.txt"]]
    assert (parts[0] / "a.txt").read_text() == "a"  # the retry's, not the failed batch's
    assert sorted(x.name for x in files.iterdir()) == ["part-000000", "part-000001", "part-000002"]


def test_shar_write_retried_cut_by_cut_keeps_every_written_cut(tmp_path, templated):
    """The mix's Shar writer under the runner's per-cut retry (ShardProcessor, as a Ray actor runs
    it): a cut whose `custom.mix` is no mapping makes the batch raise. Before: only the last cut's
    Shar piece survived the retry."""
    from osum_data.export.shar import STAGE, gather_shar
    from osum_data.run.config import build_config
    from osum_data.run.shard import ShardInput, ShardProcessor

    cuts = json.loads(json.dumps(templated))
    cuts[3]["custom"]["mix"] = "broken"
    cfg = build_config(
        {"name": "m", "shard_size": 8, "imports": ["osum_data.export.shar"], "stages": [{"stage": STAGE}]}
    )
    run = tmp_path / "run"
    proc = ShardProcessor(cfg, run)
    lines = [json.dumps(c) for c in cuts]
    status = proc.run_shard(ShardInput(0, "h", lines, list(range(1, 9))))
    assert (status["out"], status["rejected"]) == (7, 1)
    gather_shar(run, 1, tmp_path / "shar")
    from lhotse import CutSet

    back = CutSet.from_shar(in_dir=tmp_path / "shar" / "all")
    assert sorted(c.id for c in back) == sorted(c["id"] for i, c in enumerate(cuts) if i != 3)
    gather_shar(run, 1, tmp_path / "shar", kept=7)  # the count the mix checks against the run's


def test_an_export_that_finds_fewer_files_than_kept_cuts_fails(tmp_path):
    from osum_data.export.engine import ExportCountError, check_on_disk

    assert check_on_disk("x", 7, 7) == 7
    with pytest.raises(ExportCountError, match="hold 1 sample.* but 7 cut"):
        check_on_disk("export sharegpt", 1, 7)


# --- item 7: superseded results keep their audio ------------------------------------------------


def test_superseded_manifest_still_points_at_its_own_audio(tmp_path, ray_session):
    """Before: a re-run with another config moved cuts.jsonl.gz to superseded/ but rewrote
    files/NNNNNN/augment/*_aug0.flac in place, so the set-aside manifest described audio that was
    gone (8 of 8 md5s changed)."""
    from osum_data.run.config import build_config
    from osum_data.run.runner import run_pipeline
    from tests.para_fixtures import noise_manifest

    speech = demo_like_manifest(tmp_path, 8)
    noise = noise_manifest(tmp_path)

    def cfg(snr: float):
        return build_config(
            {
                "name": "sgc-like",
                "shard_size": 4,
                "imports": ["osum_data.augment.stage"],
                "stages": [{"stage": "augment", "noise": str(noise), "copies": 1, "snr_db": [snr, snr]}],
            }
        )

    out = tmp_path / "out"
    first = run_pipeline(cfg(5.0), speech, out, progress=False).summary
    augmented = {k: v for k, v in _sources(out / "cuts.jsonl.gz").items() if "/files/" in v}
    assert len(augmented) == 8
    before = {k: _md5(v) for k, v in augmented.items()}
    run_pipeline(cfg(20.0), speech, out, progress=False)  # the same folder, another --set
    # The new run did rewrite the audio under the same names...
    now = _sources(out / "cuts.jsonl.gz")
    assert sorted(now[k] for k in augmented) == sorted(augmented.values())
    assert all(_md5(now[k]) != before[k] for k in augmented)
    # ...and the superseded manifest points at audio that is still what it described.
    moved = out / "superseded" / f"{first['config_hash']}-{first['input_digest']}"
    old = {k: v for k, v in _sources(moved / "cuts.jsonl.gz").items() if k in augmented}
    assert old.keys() == augmented.keys()
    assert all(Path(v).is_relative_to(moved) for v in old.values())
    assert {k: _md5(v) for k, v in old.items()} == before
    # The unchanged originals still point at their source audio.
    assert {k: v for k, v in _sources(moved / "cuts.jsonl.gz").items() if k not in augmented} == {
        k: v for k, v in now.items() if k not in augmented
    }


# --- item 9: a deeply nested JSON line is a reject ------------------------------------------------


def _nested_line(depth: int = 5000) -> str:
    return (
        '{"id": "deep", "start": 0, "duration": 1, "channel": 0, "custom": {"x": '
        + "[" * depth
        + "]" * depth
        + "}}"
    )


def test_a_deeply_nested_input_line_is_a_reject_not_the_end_of_the_run(tmp_path, ray_session):
    """Before: RecursionError and a Ray traceback, no output; now the run finishes and the line is
    rejected (too_deep) with its line number, like other bad lines."""
    from osum_data.run.config import build_config
    from osum_data.run.runner import run_pipeline

    manifest = demo_like_manifest(tmp_path, 6)
    lines = gzip.decompress(manifest.read_bytes()).decode().splitlines()
    lines.insert(2, _nested_line())
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    cfg = build_config({"name": "t", "shard_size": 4, "stages": [{"stage": "template", "task": "asr"}]})
    summary = run_pipeline(cfg, bad, tmp_path / "out", workers=1, progress=False).summary
    rejects = list(read_jsonl(tmp_path / "out" / "rejects.jsonl.gz"))
    deep = [r for r in rejects if r["custom"]["reject"]["code"] == "too_deep"]
    assert len(deep) == 1 and deep[0]["id"] == "input-line-3"
    assert "input line 3: JSON nested 5002 levels deep (at most 64)" in deep[0]["custom"]["reject"]["reason"]
    assert summary["in"] == 7 and summary["out"] + summary["rejected"] == 7


def test_a_deeply_nested_line_in_a_mix_or_osum_export_input_is_a_reject(tmp_path):
    from osum_data.export.osum import _items
    from osum_data.mix.plan import _parse

    path = tmp_path / "in.jsonl"
    path.write_text('{"id": "a", "duration": 1}\n' + _nested_line() + "\n")
    items = list(_items(path))
    assert items[0][1] is None and items[1][1].code == "too_deep"
    assert items[1][1].detail.startswith("too deep: input line 2")

    class DS:
        path = "ds.jsonl"
        elsewhere_keys: set = set()

    d, reject = _parse(2, _nested_line().encode(), set(), DS())
    assert d is None and reject.code == "too_deep" and reject.detail.startswith("ds.jsonl:2: JSON nested")


# --- item 10: prepare does not overwrite a run folder ----------------------------------------------


def test_prepare_refuses_a_finished_run_folder(tmp_path):
    """Before: `prepare` replaced a run's cuts and rejects with raw import cuts while summary.json
    still described the run."""
    from tests.para_fixtures import noise_manifest

    noise_manifest(tmp_path)  # tmp/noise with metadata.tsv, imported into tmp/noise_cuts
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("cuts.jsonl.gz", "rejects.jsonl.gz"):
        (run_dir / name).write_bytes(gzip.compress(b'{"id": "kept"}\n', mtime=0))
    (run_dir / "summary.json").write_text('{"pipeline": "asr"}')
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    proc = _cli("prepare", "tsv", tmp_path / "noise", run_dir)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "summary.json" in lines[0] and "give another OUT_DIR" in lines[0]
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before
    # A folder of an earlier import is overwritten as before.
    again = _cli("prepare", "tsv", tmp_path / "noise", tmp_path / "noise_cuts")
    assert again.returncode == 0, again.stderr


# --- item 11: header typos are named ---------------------------------------------------------------


def _table(folder: Path, header: str, rows: list[str]) -> Path:
    import numpy as np
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / "a.wav", np.zeros(1600, dtype=np.float32) + 0.01, 16000)
    (folder / "metadata.tsv").write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return folder


def test_a_header_typo_of_a_label_column_is_refused_naming_the_known_column(tmp_path):
    """Before: `emotoin gendr` imported every row without emotion and gender and said nothing."""
    corpus = _table(tmp_path / "c", "id\taudio\ttext\temotoin\tgendr", ["u1\ta.wav\thello\thappy\tfemale"])
    proc = _cli("prepare", "tsv", corpus, tmp_path / "out")
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "'emotoin' (did you mean 'emotion'?)" in line and "'gendr' (did you mean 'gender'?)" in line
    assert not (tmp_path / "out" / "cuts.jsonl.gz").exists()


def test_unknown_columns_far_from_any_label_are_named_in_the_report(tmp_path):
    from osum_data.corpora import prepare

    corpus = _table(tmp_path / "c", "id\taudio\ttext\tnotes", ["u1\ta.wav\thello\tmic 2"])
    report = prepare("tsv", corpus, tmp_path / "out")
    assert report.cuts == 1
    assert "ignored column(s) of metadata.tsv that no label reads: notes" in report.summary()


def test_a_missing_required_column_suggests_the_typo(tmp_path):
    corpus = _table(tmp_path / "c", "id\taudio\ttxt", ["u1\ta.wav\thello"])
    proc = _cli("prepare", "tsv", corpus, tmp_path / "out")
    assert proc.returncode == 2 and "is 'txt' for 'text' a typo?" in proc.stderr, proc.stderr


# --- item 13: files that are not UTF-8 are named with line and encoding ------------------------------


def test_utf16_and_latin1_corpus_files_are_named_with_line_and_encoding(tmp_path):
    """Before: `error: utf-8` (the UnicodeDecodeError's first argument) and nothing else."""
    import numpy as np
    import soundfile as sf

    crema = tmp_path / "crema"
    (crema / "AudioWAV").mkdir(parents=True)
    sf.write(crema / "AudioWAV" / "1001_DFA_ANG_XX.wav", np.zeros(1600, dtype=np.float32), 16000)
    (crema / "VideoDemographics.csv").write_bytes("ActorID,Age,Sex\n1001,51,Male\n".encode("utf-16"))
    proc = _cli("prepare", "cremad", crema, tmp_path / "o1")
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "VideoDemographics.csv" in line and "UTF-16" in line and "save it as UTF-8" in line

    libri = tmp_path / "libri" / "dev-clean" / "84" / "121123"
    libri.mkdir(parents=True)
    sf.write(libri / "84-121123-0000.flac", np.zeros(1600, dtype=np.float32), 16000)
    (libri / "84-121123.trans.txt").write_bytes(
        "84-121123-0000 GO\n84-121123-0001 CAF\xc9\n".encode("latin-1")
    )
    proc = _cli("prepare", "librispeech", tmp_path / "libri", tmp_path / "o2")
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "84-121123.trans.txt: line 2 is not UTF-8 (byte 0xc9 at column 19)" in line
    assert "Latin-1" in line


def test_a_cr_only_table_says_so_instead_of_duplicate_columns(tmp_path):
    """Before: `duplicate column(s) allison, en` (the whole file read as one header line)."""
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "metadata.tsv").write_bytes(b"id\taudio\ttext\rallison\ta.wav\ten\rbob\tb.wav\ten\r")
    proc = _cli("prepare", "tsv", corpus, tmp_path / "out")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "metadata.tsv: lines end in CR only" in line and "duplicate" not in line


def test_report_names_the_file_and_line_of_a_bad_duration_or_a_truncated_manifest(tmp_path):
    """Before: `could not convert string to float: 'abc'` and `unexpected EOFError`, no file."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"pipeline": "p", "accounting": "in 2 = out 2"}))
    write_jsonl(run / "cuts.jsonl.gz", [{"id": "a", "duration": 1.0}, {"id": "b", "duration": "abc"}])
    proc = _cli("report", run, "--out", tmp_path / "r1")
    assert proc.returncode == 2, proc.stderr
    assert f"{run / 'cuts.jsonl.gz'}:2: cut 'b' has duration 'abc'" in proc.stderr
    write_jsonl(run / "cuts.jsonl.gz", [{"id": f"c{i}", "duration": 1.0} for i in range(50)])
    data = (run / "cuts.jsonl.gz").read_bytes()
    (run / "cuts.jsonl.gz").write_bytes(data[: len(data) - 12])
    proc = _cli("report", run, "--out", tmp_path / "r2")
    assert proc.returncode == 2 and f"{run / 'cuts.jsonl.gz'} is truncated" in proc.stderr, proc.stderr


# --- item 14: plot text is literal ---------------------------------------------------------------


def test_a_label_with_dollar_signs_is_plotted_literally(tmp_path):
    """Before: matplotlib parsed `$x^{$` as mathtext and the report aborted (ParseFatalException)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"pipeline": "p", "accounting": "in 1 = out 1"}))
    cut = {
        "id": "a",
        "duration": 2.0,
        "custom": {"task": "$\\frac{x^{$ task"},
        "supervisions": [{"custom": {"emotion": "$x^{$", "label_source": {"emotion": "$\\alpha"}}}],
    }
    write_jsonl(run / "cuts.jsonl.gz", [cut])
    proc = _cli("report", run, "--out", tmp_path / "r")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ParseFatalException" not in proc.stderr
    pngs = sorted(p.name for p in (tmp_path / "r").glob("*.png"))
    assert {"00-run-hours_per_label.png", "00-run-label_sources.png", "00-run-durations.png"} <= set(pngs)


# --- item 15: SIGTERM ends like Ctrl-C -------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_stops_a_run_with_one_line_and_exit_130(tmp_path):
    """Before: SIGTERM ended in SIGABRT with a Ray C++ stack dump."""
    manifest = demo_like_manifest(tmp_path, 200)
    pipeline = tmp_path / "slow.yaml"
    pipeline.write_text(
        "name: slow\nshard_size: 10\nimports: [stages_for_tests]\nstages:\n"
        "  - stage: sleep_per_cut\n    seconds: 0.05\n  - stage: template\n"
    )
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "osum_data.cli", "run", str(pipeline), "--input", str(manifest),
           "--output", str(out), "--workers", "2", "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.time() + 120
    while len(list((out / "shards").glob("done.*.json"))) < 2 and time.time() < end:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("osum-data run: error: interrupted"), stderr[-3000:]
    assert "Traceback" not in stderr and "SIGABRT" not in stderr and "*** " not in stderr, stderr[-3000:]


# --- item 12: the trainer's commands end in one line -----------------------------------------------

TINY = REPO / "training" / "configs" / "tiny.yaml"


def _trainer(capsys, tool: str, *args) -> tuple[int, str]:
    """A trainer command's `main` (the console script's entry point) in this process: (exit code,
    its one stderr line). Anything that escapes `main` (a traceback) fails the test."""
    import importlib

    module = {"osum-train": "train", "osum-decode": "decode", "osum-export": "export"}.get(
        tool, "osum_checkpoint"
    )
    capsys.readouterr()
    code = importlib.import_module(f"training.{module}").main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith(f"{tool}: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return code, lines[0]


@pytest.fixture(scope="module")
def task_cuts(tmp_path_factory) -> Path:
    from lhotse import CutSet

    from osum_data.demo.task_cuts import demo_task_cuts

    path = tmp_path_factory.mktemp("trainer") / "cuts.jsonl.gz"
    CutSet.from_cuts(demo_task_cuts(8, tasks=("asr",), max_duration=3.6)).to_file(path)
    return path


def test_trainer_config_and_path_errors_are_one_line_exit_2(tmp_path, task_cuts, capsys):
    """Before: `optim.lr: fast` surfaced as torch's TypeError traceback; a duplicate key and two
    --weights for one --train were accepted silently; a missing file was a traceback."""
    dup = tmp_path / "dup.yaml"
    dup.write_text(TINY.read_text() + "\noptim:\n  lr: 1.0e-4\n")
    out = tmp_path / "o"
    train = ("osum-train", "--config", TINY, "--train", task_cuts, "--output", out)
    none = tmp_path / "none"
    decode = ("osum-decode", "--config", TINY, "--checkpoint", none, "--cuts", task_cuts, "--output", out)
    cases = [
        ((*train, "--set", "optim.lr=fast"), "optim.lr='fast': Input should be a valid number"),
        ((*train, "--set", "optim.max_steps=ten"), "optim.max_steps='ten': Input should be a valid integer"),
        ((*train, "--weights", "1", "2"), "--weights gives 2 weight(s) for 1 --train input(s)"),
        (("osum-train", "--config", dup, "--train", task_cuts, "--output", out), "key 'optim' given twice"),
        (("osum-train", "--config", none, "--train", task_cuts, "--output", out), "not found"),
        (decode, str(none)),
        (("osum-export", "--config", TINY, "--checkpoint", none, "--output", out), str(none)),
        (("osum-convert", "--osum", tmp_path / "infer.pt", "--output", out), "infer.pt"),
    ]  # fmt: skip
    for args, message in cases:
        code, line = _trainer(capsys, *args)
        assert code == 2 and message in line, (args, line)
    assert not out.exists()  # validated before any work


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_osum_train_stops_on_ctrl_c_or_sigterm_with_one_line_and_exit_130(tmp_path, task_cuts, sig):
    """Before: a KeyboardInterrupt traceback and exit 1 (Ctrl-C); SIGTERM killed it mid-step."""
    out = tmp_path / "run"
    module = "import sys; from training.train import main; sys.exit(main())"
    args = ["--config", TINY, "--train", task_cuts, "--output", out, "--set", "optim.max_steps=100000"]
    args += ["--set", "train.log_every=1", "--set", "train.tensorboard=false"]
    cmd = [sys.executable, "-c", module, *map(str, args)]
    env = {**_env(), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    end = time.time() + 240
    log = out / "train_log.jsonl"
    while not (log.exists() and '"loss"' in log.read_text()) and time.time() < end and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read()[-3000:] if proc.stderr else ""
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "osum-train: interrupted" in stderr.splitlines()[-1], stderr[-3000:]


