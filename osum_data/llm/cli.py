"""`osum-data llm serve | batch-export | batch-import` and `osum-data prompts expand`.

`add_llm_commands(subparsers)` adds both command groups to the main parser; a handler returns its
exit code, and an error ends it the way every `osum-data` command ends (`cli_args.run_command`).
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, TypeAdapter

from osum_data.cli_args import add_set_flag, positive_int
from osum_data.errors import OsumError
from osum_data.yaml_config import ConfigError, apply_overrides


def settings_from_overrides(overrides: list[str]):
    """`--set llm.base_url=URL --set llm.model=NAME ...` -> validated LLMSettings (the one `--set` rule)."""
    from osum_data.llm.settings import load_llm_settings

    other = [text for text in overrides if not text.startswith("llm.")]
    if other:
        raise ConfigError(f"--set {other[0][:100]!r}: only llm.* keys are accepted here")
    return load_llm_settings(apply_overrides({}, overrides).get("llm"))


def setting_type(
    model: type[BaseModel], name: str, kind: type[int] | type[float]
) -> Callable[[str], int | float]:
    """An argparse `type` for an option that sets the field `model.name`: validated by pydantic against
    the field's own bounds when the command line is parsed, so `--port 99999` ends as one usage line
    naming the option and its range (exit 2), and an option never accepts what `--set llm.KEY=` refuses."""
    metadata = model.model_fields[name].metadata
    adapter = TypeAdapter(Annotated[(kind, *metadata)])
    words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    allowed = " and ".join(
        f"{sign} {getattr(m, k)}" for m in metadata for k, sign in words.items() if hasattr(m, k)
    )

    def parse(text: str) -> int | float:
        try:
            return adapter.validate_python(kind(text))
        except ValueError:  # pydantic's ValidationError is one
            what = f"must be {allowed}" if allowed else f"expected a {kind.__name__}"
            raise argparse.ArgumentTypeError(f"{what}, got {text!r}") from None

    return parse


def _cmd_serve(args: argparse.Namespace) -> int:
    from osum_data.llm.server import embedded_server
    from osum_data.llm.settings import EmbeddedSettings

    settings = EmbeddedSettings(port=args.port, model_path=args.model, n_ctx=args.n_ctx)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with embedded_server(settings) as ep:
        print(f"serving {ep.model} at {ep.base_url} (Ctrl-C stops it)")
        print(f"use it with: --set llm.base_url={ep.base_url} --set llm.model={ep.model}")
        print(f"         or: export OPENAI_BASE_URL={ep.base_url} OPENAI_MODEL={ep.model}", flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
    print("stopped")
    return 0


def _cmd_batch_export(args: argparse.Namespace) -> int:
    from osum_data.llm.batch import export_batch
    from osum_data.llm.cache import AnswerCache

    settings = settings_from_overrides(args.set)
    cache = AnswerCache(settings.resolved_cache_dir()) if settings.cache else None
    report = export_batch(Path(args.batch_dir), Path(args.out), cache, max_lines=args.max_lines)
    print(report.summary())
    return 0


def _cmd_batch_import(args: argparse.Namespace) -> int:
    from osum_data.llm.batch import import_batch
    from osum_data.llm.cache import AnswerCache

    settings = settings_from_overrides(args.set)
    report = import_batch(
        [Path(p) for p in args.results], Path(args.requests), AnswerCache(settings.resolved_cache_dir())
    )
    print(report.summary())
    if report.imported:
        return 0
    files = ", ".join(args.results)
    why = f"all {report.lines} lines were rejected (above)" if report.lines else "no result lines in it"
    raise OsumError(f"nothing imported from {files}: {why}")


def _default_out(key: str, language: str) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "_", key.lower()).strip("_")
    return Path(f"prompts_{language}_{slug}.yaml")


def _cmd_prompts_expand(args: argparse.Namespace) -> int:
    from osum_data.llm.batch import check_out_file
    from osum_data.llm.client import LLMClient
    from osum_data.llm.endpoint import resolve_endpoint
    from osum_data.llm.prompt_expand import check_expand_args, expand_prompts, write_review_yaml

    check_expand_args(args.key, args.n, args.language)
    settings = settings_from_overrides(args.set)
    out = Path(args.out) if args.out else _default_out(args.key, args.language)
    check_out_file(out)  # before the endpoint is started and asked
    with resolve_endpoint(settings) as resolved:
        client = LLMClient(resolved)
        result = expand_prompts(client, args.key, args.n, args.language, args.seed, args.temperature)
    write_review_yaml(result, out)
    print(result.summary())
    print("llm: " + json.dumps(client.stats.as_dict()))
    print(f"wrote {out}")
    return 0 if result.accepted else 1


def add_llm_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `llm ...` and `prompts ...` to the `osum-data` parser's subcommands."""
    from osum_data.llm.batch import OPENAI_MAX_LINES
    from osum_data.llm.settings import EmbeddedSettings, LLMSettings

    set_help = "LLM setting, e.g. llm.base_url=http://host:8000/v1 llm.model=NAME llm.cache_dir=DIR"

    llm = subparsers.add_parser("llm", help="the LLM endpoint: local server, batch files")
    llm_sub = llm.add_subparsers(dest="llm_command", required=True)

    serve = llm_sub.add_parser("serve", help="run the embedded local LLM server until Ctrl-C")
    port = setting_type(EmbeddedSettings, "port", int)
    serve.add_argument("--port", type=port, default=None, help="default: a free port")
    serve.add_argument("--model", default=None, help="a .gguf file (default: SmolLM2-135M-Instruct)")
    serve.add_argument("--n-ctx", type=setting_type(EmbeddedSettings, "n_ctx", int), default=2048)
    serve.set_defaults(func=_cmd_serve)

    exp = llm_sub.add_parser("batch-export", help="merge collected requests into one OpenAI batch JSONL")
    exp.add_argument("batch_dir", help="the llm.batch_dir a run collected its requests in")
    exp.add_argument("--out", required=True, help="batch input file (also runs with vllm run-batch)")
    exp.add_argument(
        "--max-lines", type=positive_int, default=OPENAI_MAX_LINES, help="split into files of at most N lines"
    )
    add_set_flag(exp, set_help, "llm.KEY=VALUE")
    exp.set_defaults(func=_cmd_batch_export)

    imp = llm_sub.add_parser("batch-import", help="validate batch results and add them to the cache")
    imp.add_argument("results", nargs="+", help="batch output JSONL file(s)")
    imp.add_argument("--requests", required=True, help="the file batch-export wrote")
    add_set_flag(imp, set_help, "llm.KEY=VALUE")
    imp.set_defaults(func=_cmd_batch_import)

    prompts = subparsers.add_parser("prompts", help="instruction prompt pools")
    prompts_sub = prompts.add_subparsers(dest="prompts_command", required=True)
    expand = prompts_sub.add_parser("expand", help="new instructions for a task key, written by the LLM")
    expand.add_argument("key", help="task key, e.g. '<TRANSCRIBE> <EMOTION>'")
    expand.add_argument("--n", type=int, default=100, help="how many new instructions")
    expand.add_argument("--language", choices=["zh", "en"], default="en")
    expand.add_argument("--out", default=None, help="YAML for review (default: prompts_LANG_KEY.yaml)")
    expand.add_argument("--seed", type=int, default=0)
    expand.add_argument("--temperature", type=setting_type(LLMSettings, "temperature", float), default=0.9)
    add_set_flag(expand, set_help, "llm.KEY=VALUE")
    expand.set_defaults(func=_cmd_prompts_expand)
