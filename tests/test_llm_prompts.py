"""`osum-data prompts expand`: LLM-written instructions, validated like the shipped pools, written for
review. Against a scripted server (known good and bad candidates) and against the real SmolLM2."""

from __future__ import annotations

import argparse
import json

import pytest
import yaml
from llm_fault_server import FaultServer
from llm_helpers import llm_env  # noqa: F401

from osum_data.cli_args import run_command
from osum_data.llm.cli import add_llm_commands, settings_from_overrides
from osum_data.llm.filters import check_text
from osum_data.tasks.prompts import instruction_problems, leak_patterns, prompt_pool
from osum_data.yaml_config import ConfigError

pytestmark = pytest.mark.usefixtures("llm_env")
KEY = "<EMOTION>"
WORDS = ["river", "window", "garden", "pencil", "candle", "meadow", "harbor", "lantern", "orchard", "saddle"]


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="osum-data")
    add_llm_commands(parser.add_subparsers(dest="command", required=True))
    return run_command(parser.parse_args(argv))  # the one way an osum-data command ends


def _scripted_reply(text: str, body: dict) -> str:
    """Two new instructions per request (told apart by the request's seed) and one of each kind of bad."""
    word = WORDS[body["seed"] % len(WORDS)]
    good = [
        f"Listen to the {word} recording and describe the feeling in the voice.",
        f"What mood does the person in the {word} clip convey?",
    ]
    bad = [
        "Is the speaker happy or sad?",  # names labels
        prompt_pool("en")[KEY][0],  # already in the pool
        "这个人说话时是什么情绪？",  # not English
        "I'm sorry, but I can't write instructions.",  # refusal
        "Return the <EMOTION> tag.",  # tag characters
        good[0],  # a duplicate inside the answer
    ]
    return json.dumps({"instructions": [f"1. {good[0]}", *good[1:], *bad]})


def test_expand_keeps_only_valid_new_instructions_and_reruns_from_cache(tmp_path, capsys):
    out = tmp_path / "review.yaml"
    with FaultServer(reply_fn=_scripted_reply) as srv:
        argv = ["prompts", "expand", KEY, "--n", "12", "--language", "en", "--out", str(out)]
        argv += [f"--set=llm.base_url={srv.base_url}", "--set=llm.model=fault-model"]
        assert _cli(argv) == 0
        printed = capsys.readouterr().out
        sent = srv.requests
        first = out.read_text()
        data = yaml.safe_load(first)
        accepted = data[KEY]
        assert list(data) == [KEY] and len(accepted) == 12 and len(set(accepted)) == 12
        pool = set(prompt_pool("en")[KEY])
        leaks = leak_patterns("en")
        for text in accepted:
            assert text not in pool and not text.startswith("1.")  # list markup stripped
            assert instruction_problems(text, leaks) == [] and check_text(text, "en") is None
        for code in ("label_leak", "duplicate", "wrong_language", "refusal", "invalid"):
            assert f"#   {code}: " in first, code
        assert "12 accepted" in printed and '"requests": ' in printed
        # The same command again: the same file, no request.
        assert _cli(argv) == 0
        assert srv.requests == sent and out.read_text() == first


def test_expand_rejects_unknown_keys(tmp_path, capsys):
    argv = ["prompts", "expand", "<NOPE>", "--n", "3", "--set=llm.base_url=http://127.0.0.1:9/v1"]
    assert _cli([*argv, "--set=llm.model=m"]) == 2
    assert "no task key" in capsys.readouterr().err


def test_expand_checks_temperature_and_out_before_any_request(tmp_path, capsys, monkeypatch):
    """`--temperature` has the bounds of llm.temperature; a directory `--out` fails before the endpoint
    is asked, and no temporary file is left behind."""
    monkeypatch.chdir(tmp_path)  # the default --out is in the working directory
    with FaultServer(reply_fn=_scripted_reply) as srv:
        argv = ["prompts", "expand", KEY, "--n", "2"]
        argv += [f"--set=llm.base_url={srv.base_url}", "--set=llm.model=fault-model"]
        for bad in ("-3", "2.5", "nan"):
            with pytest.raises(SystemExit) as e:
                _cli([*argv, "--temperature", bad])
            assert e.value.code == 2
            assert f"argument --temperature: must be >= 0 and <= 2, got '{bad}'" in capsys.readouterr().err
        with pytest.raises(ConfigError, match="llm.temperature"):  # the same range as the setting
            settings_from_overrides(["llm.temperature=2.5"])
        (tmp_path / "outdir").mkdir()
        assert _cli([*argv, "--out", str(tmp_path / "outdir")]) == 2
        err = capsys.readouterr().err
        assert f"--out {tmp_path / 'outdir'} is a directory; give a file path" in err and err.count("\n") == 1
        assert srv.requests == 0 and not list(tmp_path.rglob("*.tmp"))
        assert _cli([*argv, "--temperature", "2", "--out", str(tmp_path / "ok.yaml")]) == 0


@pytest.mark.slow  # ~30-80 s on 2 busy cores: the 135M model writes ~1.5k tokens
def test_expand_with_the_embedded_smollm2(tmp_path, monkeypatch, capsys):
    """Nothing configured: the embedded server is started, and whatever the 135M model writes is held
    to the same rules."""
    monkeypatch.delenv("OPENAI_API_KEY")
    out = tmp_path / "en.yaml"
    code = _cli(["prompts", "expand", KEY, "--n", "2", "--language", "en", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "SmolLM2-135M-Instruct" in out.read_text()
    accepted = yaml.safe_load(out.read_text())[KEY]
    assert code == (0 if accepted else 1) and f"{KEY} (en)" in printed
    for text in accepted:
        assert instruction_problems(text, leak_patterns("en")) == [] and check_text(text, "en") is None
