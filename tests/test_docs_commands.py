"""Issue 19, item 8: every command shown in the docs is one that a test runs.

Each `osum-data`, `osum-train`, `osum-decode`, `osum-export`, `osum-convert`, `python -m <ours>`,
`torchrun ... -m <ours>`, `python bench/...` and `make ...` command in a fenced bash/sh block of
README.md and docs/*.md is parsed by the command's own argparse parser (its console-script `main`,
stopped right after `parse_args` returns, so nothing else runs): the subcommand, every flag and every
typed value must be accepted. Every repository file it names must exist, and the quick ones
(`osum-data tasks`, every `--help`) really run. Synopses with placeholders belong in `text` blocks.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_BLOCK = re.compile(r"^```(?:bash|sh|shell|console)[ \t]*\n(.*?)^```", re.M | re.S)
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
# Repository paths a command may name: these top-level folders ship with the repository.
SHIPPED = re.compile(
    r"^(?:pipelines|training|bench|docs|osum_data|scripts|tests)/[\w./-]+\.(?:ya?ml|py|md|json)$"
)
SEPARATORS = {"&&", "||", ";", "|"}
# Commands that take seconds: shown in the docs, they really run (and so does every --help).
QUICK = {("osum-data", "tasks"), ("osum-data", "stages")}
# Synopsis placeholders: in a bash block a command must be a complete example.
PLACEHOLDER = re.compile(
    r"^(?:\.\.\.|\[.*|.*\]|CUTS|OUT|OUT_DIR|DIR|CORPUS_DIR|AUDIO_DIR|NAME|PIPELINE|N|ADDR|URL|KEY|VALUE|FILE"
    r"|PORT|LANG|RESULTS|(?:CFG|MIX|PLAN|PIPELINE)\.yaml)$"
)


@dataclass(frozen=True)
class Command:
    where: str  # file:line
    argv: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.where}: {shlex.join(self.argv)}"


def shell_commands(path: Path) -> list[Command]:
    """The commands of a file's shell blocks: continuation lines joined, comments dropped, split at
    && ; | ||, leading VAR=value assignments skipped."""
    text = path.read_text(encoding="utf-8")
    found = []
    for block in SHELL_BLOCK.finditer(text):
        first_line = text.count("\n", 0, block.start(1)) + 1
        logical: list[tuple[int, str]] = []
        pending, start = "", 0
        for offset, line in enumerate(block.group(1).splitlines()):
            if not pending:
                start = first_line + offset
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            logical.append((start, pending + line))
            pending = ""
        for lineno, line in logical:
            tokens = shlex.split(line, comments=True)
            command: list[str] = []
            for token in [*tokens, ";"]:
                if token in SEPARATORS:
                    while command and re.match(r"^[A-Z_][A-Z0-9_]*=", command[0]):
                        command.pop(0)
                    if command:
                        found.append(Command(f"{path.relative_to(REPO)}:{lineno}", tuple(command)))
                    command = []
                else:
                    command.append(token)
    return found


def _ours(cmd: Command) -> bool:
    head = cmd.argv[0]
    return head in SCRIPTS or head in ("make", "python", "python3", "torchrun") and _target(cmd) is not None


def _target(cmd: Command) -> tuple[str, str, list[str]] | None:
    """(kind, what, argv): ("script", "osum-data", args), ("module", "training.train", args),
    ("file", "bench/x.py", args), ("make", "demo", [])."""
    head, args = cmd.argv[0], list(cmd.argv[1:])
    if head in SCRIPTS:
        return "script", head, args
    if head == "make":
        return "make", " ".join(args), []
    if "-m" in args:
        module = args[args.index("-m") + 1]
        if module.split(".")[0] in ("osum_data", "training"):
            return "module", module, args[args.index("-m") + 2 :]
        return None
    if head.startswith("python") and args and args[0].endswith(".py"):
        return "file", args[0], args[1:]
    return None


ALL = [c for doc in DOCS for c in shell_commands(doc)]
OURS = [c for c in ALL if _ours(c)]


class _Parsed(BaseException):  # not an Exception: no command's error handler may swallow it
    def __init__(self, namespace: argparse.Namespace):
        super().__init__()
        self.namespace = namespace


@contextlib.contextmanager
def _stop_after_parse():
    """Let the real parser parse, then stop the command before it does anything else."""
    real = argparse.ArgumentParser.parse_args

    def parse(self, args=None, namespace=None):
        raise _Parsed(real(self, args, namespace))

    with mock.patch.object(argparse.ArgumentParser, "parse_args", parse):
        yield


def _main_of(kind: str, what: str):
    if kind == "script":
        module, func = SCRIPTS[what].split(":")
        return getattr(importlib.import_module(module), func)
    if kind == "module":
        return importlib.import_module(what).main
    raise AssertionError(kind)


def _parse(cmd: Command) -> argparse.Namespace:
    kind, what, args = _target(cmd)
    err = io.StringIO()
    try:
        with _stop_after_parse(), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            if kind == "file":
                script = REPO / what  # as `python script.py` runs it: its folder first on the path
                with mock.patch.object(sys, "argv", [what, *args]), mock.patch.object(
                    sys, "path", [str(script.parent), *sys.path]
                ):
                    runpy.run_path(str(script), run_name="__main__")
            else:
                _main_of(kind, what)(args)
    except _Parsed as parsed:
        return parsed.namespace
    except SystemExit as e:
        pytest.fail(f"{cmd}\n  does not parse (exit {e.code}): {err.getvalue().strip()}")
    pytest.fail(f"{cmd}\n  ended without parsing its arguments: {err.getvalue().strip()}")


def _makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w-]*):", text, flags=re.M))


@pytest.mark.parametrize("cmd", OURS, ids=[c.where for c in OURS])
def test_docs_command(cmd: Command):
    kind, what, args = _target(cmd)
    placeholders = [t for t in cmd.argv for part in t.split("=") if PLACEHOLDER.match(part)]
    assert not placeholders, (
        f"{cmd}\n  placeholders {placeholders} in a bash block: give real values, or move the synopsis to "
        "a text block"
    )
    named = [part for token in cmd.argv for part in token.split("=") if SHIPPED.match(part)]
    missing = [p for p in named if not (REPO / p).exists()]
    assert not missing, f"{cmd}\n  names files the repository does not have: {missing}"
    if kind == "make":
        assert what in _makefile_targets(), f"{cmd}\n  no such Makefile target: {what}"
        return
    if kind == "file":
        assert (REPO / what).is_file(), f"{cmd}\n  no such file: {what}"
        if not args:
            return  # a bench script run bare: existence is the check (running it takes minutes)
    if "--help" in args or "-h" in args:
        _run_quick(cmd, kind, what, args)
        return
    namespace = _parse(cmd)
    if kind == "script" and (what, *args) in QUICK:
        _run_quick(cmd, kind, what, args)
    if what == "osum-data" and namespace.command in ("run", "mix"):
        _check_config(cmd, namespace)


def _stand_in(path: Path) -> None:
    """One real recorded prompt, labelled with an event (so it also serves as an event-clip bank)."""
    from osum_data.demo import write_cycled_manifest
    from osum_data.manifest_io import read_jsonl, write_jsonl

    path.parent.mkdir(parents=True, exist_ok=True)
    write_cycled_manifest(path, 1)
    cuts = list(read_jsonl(path))
    for cut in cuts:
        cut["supervisions"][0].setdefault("custom", {})["events"] = ["laugh"]
    write_jsonl(path, cuts)


def _check_config(cmd: Command, namespace: argparse.Namespace) -> None:
    """A shipped pipeline or mix with the command's --set overrides validates as the command would
    validate it before any work (a renamed stage or parameter makes the shown command stale). Side
    inputs the command names (a noise manifest of the user's corpus) are stood in for by one real cut
    each (`_stand_in`), in a scratch folder used as the working directory."""
    from osum_data.mix.config import load_mix_config
    from osum_data.run.config import load_pipeline

    config = namespace.pipeline if namespace.command == "run" else namespace.mix
    if not SHIPPED.match(config):
        return
    overrides = []
    with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch):
        for override in namespace.set:
            key, _, value = override.partition("=")
            if value.endswith((".jsonl.gz", ".jsonl")):
                value = value.lstrip("/")  # an absolute path (a cluster's /shared/...) moves in here
                _stand_in(Path(value))
            overrides.append(f"{key}={value}")
        load = load_pipeline if namespace.command == "run" else load_mix_config
        try:
            load(REPO / config, overrides)
        except Exception as e:
            pytest.fail(f"{cmd}\n  its configuration does not validate: {e}")


def _run_quick(cmd: Command, kind: str, what: str, args: list[str]) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            code = _main_of(kind, what)(args)
        except SystemExit as e:
            code = e.code
    assert code in (0, None), f"{cmd}\n  exited {code}: {err.getvalue().strip()}"
    assert out.getvalue().strip(), f"{cmd}\n  printed nothing"


def test_the_docs_show_the_main_commands():
    """The collector finds the commands (an empty list would pass every check above)."""
    shown = {c.argv[:2] for c in OURS}
    for expected in [("make", "demo"), ("make", "test"), ("osum-data", "prepare"), ("osum-data", "run"),
                     ("osum-data", "export"), ("osum-data", "mix"), ("osum-data", "report"),
                     ("osum-data", "tasks"), ("osum-train", "--config")]:  # fmt: skip
        assert expected in shown, expected


def test_checker_catches_a_wrong_flag_a_wrong_value_a_missing_file_and_a_stale_key(tmp_path):
    doc = tmp_path / "page.md"
    doc.write_text(
        "```bash\n"
        "osum-data run pipelines/asr.yaml --input a.jsonl.gz --output out --wokers 2\n"
        "osum-data run pipelines/asr.yaml --input a.jsonl.gz --output out --workers 0\n"
        "osum-data run pipelines/nope.yaml --input a.jsonl.gz \\\n    --output out  # a comment\n"
        "make nope && osum-train --config training/configs/tiny.yaml --train x --output y\n"
        "```\n"
    )
    with mock.patch(f"{__name__}.REPO", tmp_path):
        cmds = shell_commands(doc)
    assert [c.where for c in cmds] == ["page.md:2", "page.md:3", "page.md:4", "page.md:6", "page.md:6"]
    assert cmds[2].argv[-2:] == ("--output", "out")
    for bad in cmds[:2]:
        with pytest.raises(pytest.fail.Exception, match="does not parse"):
            _parse(bad)
    with pytest.raises(AssertionError, match="nope.yaml"):
        test_docs_command(cmds[2])
    with pytest.raises(AssertionError, match="no such Makefile target"):
        test_docs_command(cmds[3])
    assert _parse(cmds[4]).train == ["x"]
    stale_argv = "osum-data run pipelines/asr.yaml --input a.gz --output o --set audio_policy.min_rate=8000"
    stale = Command("page.md:9", tuple(stale_argv.split()))
    with pytest.raises(pytest.fail.Exception, match="does not validate"):
        test_docs_command(stale)


def test_docs_index_is_the_readme():
    """The site's home page is the README with its docs/ links made relative."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    index = (REPO / "docs" / "index.md").read_text(encoding="utf-8")
    assert index == readme.replace("](docs/", "]("), (
        "docs/index.md is out of date: sed 's#](docs/#](#g' README.md > docs/index.md"
    )


def test_tour_mix_config_loads():
    from osum_data.mix.config import load_mix_config

    cfg = load_mix_config(REPO / "docs" / "examples" / "tour_mix.yaml")
    assert list(cfg.tasks) == ["asr"]


def _mkdocs() -> str:
    exe = Path(sys.executable).with_name("mkdocs")
    return str(exe) if exe.exists() else shutil.which("mkdocs") or "mkdocs"


def test_docs_site_builds_strictly_and_a_broken_link_fails_it(tmp_path):
    ok = subprocess.run([_mkdocs(), "build", "--strict", "--site-dir", str(tmp_path / "site")],
                        cwd=REPO, capture_output=True, text=True)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "site" / "layout.html").is_file()
    copy = tmp_path / "copy"
    shutil.copytree(REPO / "docs", copy / "docs")
    shutil.copy(REPO / "mkdocs.yml", copy / "mkdocs.yml")
    with (copy / "docs" / "layout.md").open("a") as f:
        f.write("\nSee [the missing page](missing.md).\n")
    broken = subprocess.run([_mkdocs(), "build", "--strict"], cwd=copy, capture_output=True, text=True)
    assert broken.returncode != 0 and "missing.md" in broken.stderr, broken.stderr


def test_make_test_builds_the_docs_strictly():
    """CI runs `make test`: its recipe builds the site with --strict before pytest."""
    text = (REPO / "Makefile").read_text()
    recipe = re.search(r"^test:.*\n((?:\t.*\n)+)", text, flags=re.M)
    assert recipe and "mkdocs build --strict" in recipe.group(1), "make test must run mkdocs build --strict"
