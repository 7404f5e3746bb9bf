"""Issue 19 ("one house") for the trainer: its config is pydantic like every other config and goes
through the shared loader, `--set` rule and error formatter; its commands end through the one
`OsumError` handler; its cut filter rejects with the one `Reject`; its draws are the one seeded
draw; and its modules import one way."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
from lhotse import CutSet  # noqa: E402

from osum_data.demo.task_cuts import demo_task_cuts  # noqa: E402
from osum_data.errors import OsumError, UsageError  # noqa: E402
from osum_data.rejects import Reject  # noqa: E402
from osum_data.seeded import seed_bits, unit_draw  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from training.cli_errors import run_command  # noqa: E402
from training.config import Config, ConfigError, config_from_dict, load_config  # noqa: E402
from training.data import CutFilter  # noqa: E402

TINY = REPO / "training" / "configs" / "tiny.yaml"


def _error(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(TINY, overrides)
    return str(e.value)


def test_trainer_config_is_strict_pydantic_through_the_shared_loader():
    """Before: a dataclass walker with its own `--set` rule, which replaced a section given as a
    scalar by an empty mapping (`--set optim=5 --set optim.lr=1` silently dropped every other
    optim key of the file)."""
    cfg = load_config(TINY, ["optim.lr=1"])
    assert isinstance(cfg, Config) and cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.model.encoder.config and cfg.source == str(TINY)  # the attribute access the trainer uses
    assert "'optim' is not a mapping" in _error(["optim=5", "optim.lr=1"])
    line = _error(["model.adapter.bogus=1"])
    assert line.startswith(f"{TINY}: unknown key 'model.adapter.bogus'; known keys: ") and "heads" in line
    assert f"{TINY}: data.num_workers=2.5: " in _error(["data.num_workers=2.5"])  # no silent int()
    assert f"{TINY}: train.tensorboard=1: " in _error(["train.tensorboard=1"])  # 1 is not `true`
    assert "optim.decay='cosin'" in _error(["optim.decay=cosin"])
    assert "optim.lr=inf" in _error(["optim.lr=.inf"])
    assert "needs exactly one of path or config" in _error(["model.llm.path=/x"])
    for name in ("tiny", "smollm2", "osum_qwen2_7b"):  # the shipped configs load unchanged
        shipped = load_config(REPO / "training" / "configs" / f"{name}.yaml")
        assert config_from_dict(shipped.to_dict()).to_dict() == shipped.to_dict()


def _ends(body) -> tuple[int, str]:
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = run_command("osum-x", lambda args: body(), [])
    return code, err.getvalue().strip()


def _raise(e: BaseException):
    def body():
        raise e

    return body


def test_trainer_commands_end_through_the_one_osum_error_handler():
    """Before: training's own handler knew only ConfigError as a usage error, so the house's
    `UsageError` (or any other OsumError) ended as an 'unexpected' exit 1."""
    assert _ends(_raise(UsageError("--weights gives 2"))) == (2, "osum-x: error: --weights gives 2")
    assert _ends(_raise(OsumError("worker died"))) == (1, "osum-x: error: worker died")
    assert _ends(_raise(KeyboardInterrupt())) == (130, "osum-x: interrupted")
    code, line = _ends(_raise(FileNotFoundError(2, "No such file or directory", "/no/cuts.jsonl")))
    assert code == 2 and line == "osum-x: error: No such file or directory: /no/cuts.jsonl"
    code, line = _ends(_raise(RuntimeError("a bug")))
    assert code == 1 and "RuntimeError: a bug" in line and "--debug" in line
    from torch._utils import ExceptionWrapper

    from training.safe_load import UnsafeCheckpoint
    from training.stream import DataError
    from training.weights import WeightsNotFound

    try:  # an input error raised in a DataLoader worker: torch re-raises it with the worker's traceback
        raise DataError("cut c1 has no custom.task/custom.target: not a task sample")
    except DataError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    code, line = _ends(wrapped.reraise)
    assert (code, line) == (1, "osum-x: error: cut c1 has no custom.task/custom.target: not a task sample")

    assert issubclass(UnsafeCheckpoint, OsumError) and not issubclass(UnsafeCheckpoint, UsageError)
    assert issubclass(WeightsNotFound, UsageError) and issubclass(ConfigError, UsageError)


def test_checkpoints_import_no_model_or_data_code():
    """Before: checkpoint -> data (Position) -> model (speech_lengths) -> weights -> checkpoint
    (safe_load), a circle hidden by function-level imports."""
    code = "import sys, training.checkpoint; print(*(m for m in sys.modules if m.startswith('training.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    loaded = set(out.stdout.split())
    assert {"training.safe_load", "training.stream"} <= loaded
    assert not loaded & {"training.data", "training.model", "training.weights"}, loaded


def test_the_cut_filter_rejects_with_the_one_reject_and_counts_each_cut_once():
    cuts = list(demo_task_cuts(3, max_duration=4.0))
    keep = CutFilter(max_duration=min(c.duration for c in cuts) + 0.01, record_ids=True)
    long = [c for c in cuts if c.duration > keep.max_duration]
    assert long, "the demo prompts differ in length"
    assert keep.reject(min(cuts, key=lambda c: c.duration)) is None
    r = keep.reject(long[0])
    assert isinstance(r, Reject) and r.code == "too_long" and "longer than" in r.detail
    for _ in range(3):  # a bucketing sampler's estimate, a probe and the real pass read it again
        assert [c.id for c in CutSet.from_cuts(cuts) if keep(c)] == [c.id for c in cuts if c not in long]
    assert keep.counts == {"too_long": len(long)} and keep.skipped == len(long)
    assert keep.ids == {c.id: keep.reject(c).detail for c in long}


def test_training_draws_are_the_one_seeded_draw_with_the_numbers_checkpoints_hold():
    """The mix's per-draw choice and each batch's generator seed went through their own sha256
    before; they are now `osum_data.seeded`, with the same numbers, so an exact resume of a run
    checkpointed before the change replays the very same batches."""
    for seed in (0, 1234):
        for i in (0, 1, 77, 10**6):
            old_mix = int.from_bytes(hashlib.sha256(f"{seed}\0mix\0{i}".encode()).digest()[:8], "big") / 2**64
            old_batch = int.from_bytes(hashlib.sha256(f"{seed}\0{i}".encode()).digest()[:8], "big") % 2**63
            assert unit_draw(seed, "mix", str(i)) == old_mix and seed_bits(seed, i) % 2**63 == old_batch
