"""One way to fail (issue 19): every `osum-data` command ends in `cli_args.run_command`, whose exit
code comes from the error's class (usage 2, runtime 1, interrupt 130), never from a guess on
`KeyError`/`ValueError`; and the command modules import no module above them."""

from __future__ import annotations

import argparse
import ast
import errno
import gzip
import socket

import pytest

from osum_data.cli import main
from osum_data.cli_args import run_command
from osum_data.errors import Interrupted, OsumError, UsageError
from tests.conftest import REPO


def _ends(error: BaseException, capsys) -> tuple[int, str]:
    def command(args: argparse.Namespace) -> int:
        raise error

    code = run_command(argparse.Namespace(command="x", func=command))
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return code, err.strip()


def test_the_exit_code_comes_from_the_error_class_not_from_a_guess(capsys):
    """Before: any KeyError or ValueError was a usage error (exit 2), whatever raised it."""
    assert _ends(UsageError("plan.yaml: unknown key 'x'"), capsys) == (
        2,
        "osum-data x: error: plan.yaml: unknown key 'x'",
    )
    assert _ends(OsumError("a.jsonl.gz is truncated"), capsys) == (
        1,
        "osum-data x: error: a.jsonl.gz is truncated",
    )
    assert _ends(Interrupted("stopped; run again"), capsys)[0] == 130
    assert _ends(KeyboardInterrupt(), capsys) == (130, "osum-data x: interrupted")
    for bug in (KeyError("k"), ValueError("v")):  # a bug is a runtime failure with a --debug hint
        code, line = _ends(bug, capsys)
        assert code == 1 and f"unexpected {type(bug).__name__}" in line and "--debug" in line
    disk = OSError(errno.ENOSPC, "No space left on device", "/out/cuts.jsonl.gz")
    assert _ends(disk, capsys) == (
        1,
        "osum-data x: error: disk full writing /out/cuts.jsonl.gz; free space and run the same command again",
    )
    assert _ends(FileNotFoundError(errno.ENOENT, "No such file or directory", "in.tsv"), capsys)[0] == 2


def _truncated(tmp_path):
    from osum_data.demo import write_cycled_manifest

    whole = write_cycled_manifest(tmp_path / "whole.jsonl.gz", 40, ["activated", "goodbye"])
    bad = tmp_path / "cut.jsonl.gz"
    bad.write_bytes(gzip.compress(gzip.decompress(whole.read_bytes()))[:-30])
    return bad


def test_a_truncated_manifest_exits_1_under_mix_as_under_run(tmp_path, capsys):
    """Before: the same truncated gzip exited 1 under `run` but 2 under `mix` (a ValueError there)."""
    bad = _truncated(tmp_path)
    run = ["run", f"{REPO}/pipelines/asr.yaml", "--input", str(bad), "--output", str(tmp_path / "r")]
    assert main([*run, "--no-progress"]) == 1
    assert "cut.jsonl.gz is truncated" in capsys.readouterr().err
    mix = tmp_path / "mix.yaml"
    mix.write_text(f"audio: none\ntasks:\n  asr:\n    datasets: [{bad}]\n")
    assert main(["mix", str(mix), "--output", str(tmp_path / "m"), "--workers", "1", "--no-progress"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line.startswith("osum-data mix: error: ") and "cut.jsonl.gz is truncated" in line


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_endpoint_exits_1_under_prompts_as_under_run(tmp_path, capsys, monkeypatch):
    """Before: `llm`/`prompts` commands mapped LLMEndpointError to 2 while `run` gave 1."""
    monkeypatch.chdir(tmp_path)
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    argv = ["prompts", "expand", "<TRANSCRIBE>", "--n", "2", "--set", f"llm.base_url={url}"]
    code = main([*argv, "--set", "llm.model=m", "--set", f"llm.cache_dir={tmp_path / 'cache'}"])
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert code == 1 and line.startswith("osum-data prompts: error: ") and url in line, line


def test_llm_settings_use_the_one_override_rule_and_formatter(capsys):
    """`--set llm.*` goes through yaml_config.apply_overrides; its errors name the key as typed."""
    from osum_data.llm.cli import settings_from_overrides
    from osum_data.yaml_config import ConfigError

    assert settings_from_overrides(["llm.embedded.port=8080", "llm.seed=3"]).embedded.port == 8080
    with pytest.raises(
        ConfigError, match=r"^--set: unknown key 'llm.embedded.prot'; known keys: model_path, port"
    ):
        settings_from_overrides(["llm.embedded.prot=1"])
    with pytest.raises(ConfigError, match=r"'llm.seed.x=1': 'seed' is not a mapping"):
        settings_from_overrides(["llm.seed=3", "llm.seed.x=1"])


def _imports(path) -> set[str]:
    """Every module a file imports, at its top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.update([node.module, *(f"{node.module}.{a.name}" for a in node.names)])
    return found


def test_command_modules_do_not_import_the_cli_and_plans_do_not_import_the_demo():
    """The circles cli <-> assembly_cli <-> llm.cli and plan <-> demo of issue 19."""
    pkg = REPO / "osum_data"
    for module in (pkg / "assembly_cli.py", pkg / "llm" / "cli.py", pkg / "cli_args.py"):
        assert "osum_data.cli" not in _imports(module), module
    for module in (pkg / "plan").glob("*.py"):
        assert not any(m.startswith("osum_data.demo") for m in _imports(module)), module
