"""Shared pieces of the tests of the LLM-written data (SSR, STTC, persona speech, QA): scripted answers
for the fault-injecting server, manifests of real recorded prompts with chosen transcripts, and
running a pipeline through the real CLI.

The scripted answers stand in for an LLM whose output a test must know in advance (no real model
answers on cue); everything around them (client, runner, filters, TTS, files) is the real thing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zlib
from pathlib import Path

from osum_data.demo import prompt_cut
from osum_data.manifest_io import write_jsonl
from tests.conftest import REPO, TESTS

# What the scripted chat partner answers, by a keyword of the utterance: one per quality filter.
CHAT_ANSWERS = {
    "weather": "It looks sunny tomorrow, so enjoy the day outside!",
    "refuse": "I'm sorry, but I can't help with that.",
    "unknown": "I cannot tell from what you said, to be honest.",
    "whoareyou": "As an AI language model, I am always glad to help you.",
    "short": "Ok",
    "long": " ".join(["word"] * 120),
    "german": "Das Wetter ist morgen sehr schön und sonnig, glaube ich jedenfalls.",
    "brackets": "Just use the <b> tag for bold text in your page.",
    "dupone": "Sounds like a plan to me, let us do that.",
    "duptwo": "Sounds like a plan to me, let us do that.",
    "parrot": "You said: please parrot back every word I say here.",
}
# The filter code each keyword must end in (None: kept); "parrot" copies the utterance.
CHAT_CODES = {
    "weather": None,
    "refuse": "refusal",
    "unknown": "cannot_tell",
    "whoareyou": "self_naming",
    "short": "too_short",
    "long": "too_long",
    "german": "wrong_language",
    "brackets": "angle_brackets",
    "dupone": None,
    "duptwo": "duplicate",
    "parrot": "echo",
}
_WORDS = "apple river lamp garden window pencil mountain candle ticket violin harbor blanket".split()


def _schema_name(body: dict) -> str | None:
    fmt = body.get("response_format") or {}
    return (fmt.get("json_schema") or {}).get("name")


def scripted_reply(text: str, body: dict) -> str:
    """The answer of the scripted LLM to the last user message `text` (fault markers removed)."""
    name = _schema_name(body)
    if name == "StyleAnswer":
        # Self-consistency: at temperature > 0 every third seed disagrees.
        seed, hot = int(body.get("seed") or 0), float(body.get("temperature") or 0) > 0
        style = "customer_service" if re.search(r"press|enter|dial", text, re.I) else "daily_speech"
        return json.dumps({"style": "other" if hot and seed % 3 == 2 else style})
    if name == "Answerable":
        return json.dumps({"answerable": "nothing to answer" not in text})
    if name == "ChatAnswer":
        key = next((k for k in CHAT_ANSWERS if k in text.lower()), None)
        fallback = f"Good question, let me look that up in note {zlib.crc32(text.encode()) % 100_000}."
        return json.dumps({"answer": CHAT_ANSWERS[key] if key else fallback})
    if name == "Utterance":
        m = re.search(r"about (.+?), feeling (\w+)", text)
        topic, feeling = (m.group(1), m.group(2)) if m else ("things", "fine")
        word = _WORDS[int(body.get("seed") or 0) % len(_WORDS)]
        return json.dumps(
            {"utterance": f"I keep thinking about {topic}, and I feel {feeling} about the {word}."}
        )
    if name == "QAPairs":
        pairs = [
            {"question": "What does the speaker talk about?", "answer": "The speaker talks about a topic."},
            {"question": "How does the voice sound today?", "answer": "I cannot tell from the description."},
            {"question": "What will the weather be like?", "answer": "It will be sunny tomorrow."},
        ]
        return json.dumps({"pairs": pairs})
    if name == "Supported":
        return json.dumps({"answerable": "weather" not in text})
    return json.dumps({"answer": f"reply to: {text}"})


def prompt_manifest(path: Path, rows: list[tuple[str, str]]) -> Path:
    """A manifest of real recorded prompts (Asterisk, 8 kHz) given the transcripts to use:
    rows of (prompt name, transcript); ids `p00`, `p01`, ..."""
    cuts = [prompt_cut(name, text, cut_id=f"p{i:02d}").to_dict() for i, (name, text) in enumerate(rows)]
    write_jsonl(path, cuts)
    return path


def fast_llm_overrides(base_url: str, cache_dir: Path) -> list[str]:
    """`--set` values for a fault server: short timeouts and backoff, the cache in the test's folder."""
    return [
        f"llm.base_url={base_url}",
        "llm.model=fault-model",
        "llm.timeout_s=0.5",
        "llm.max_retries=3",
        "llm.max_retry_time_s=10",
        "llm.backoff_base_s=0.01",
        "llm.backoff_max_s=0.05",
        "llm.malformed_retries=1",
        f"llm.cache_dir={cache_dir}",
    ]


# Runs pipelines one after another in one process (one local Ray start for all of them).
_RUNNER = """
import json, sys
from osum_data.run.config import load_pipeline
from osum_data.run.runner import run_pipeline
for job in json.loads(sys.argv[1]):
    config = load_pipeline(job["pipeline"], job["sets"])
    run_pipeline(config, job["input"], job["output"], workers=1, progress=False)
"""


def run_pipelines(jobs: list[dict], env: dict[str, str]) -> list[dict]:
    """Run `jobs` (pipeline file name, input or None, output, --set values) in a subprocess whose
    environment is `env`: its Ray workers see it, as those of `osum-data run` do. Returns the
    summaries."""
    spec = [
        {
            "pipeline": str(REPO / "pipelines" / j["pipeline"]),
            "input": str(j["input"]) if j.get("input") else None,
            "output": str(j["output"]),
            "sets": list(j.get("sets", [])),
        }
        for j in jobs
    ]
    full_env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)])}
    cmd = [sys.executable, "-c", _RUNNER, json.dumps(spec)]
    proc = subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((Path(j["output"]) / "summary.json").read_text()) for j in spec]


def stage_row(summary: dict, name: str) -> dict:
    return next(s for s in summary["stages"] if s["stage"] == name)
