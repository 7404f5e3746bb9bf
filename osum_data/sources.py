"""Which audio (and feature) sources a manifest may point at, and which cut ids are safe to use.

Manifests come from strangers: a Lhotse cut can name its audio as a shell `command` (lhotse runs it
with `shell=True` when the audio is decoded), a `url` (fetched through smart_open, `file://`, `s3://`
and friends included), or feature/array storage read through `kaldiio` pipes or `pipe:` paths. So:

- allowed by default: `file` (a local path; not one that looks like a URL, which ffmpeg-based
  decoders would open as one, and not a `.sph`/legacy `.opus` path with shell metacharacters, which
  lhotse hands to `sph2pipe`/`ffmpeg` through a shell), `memory` and `shar` (what our own
  pipelines and Shar readers create), and local feature/array storage;
- `command` sources (and `kaldiio` storage, `pipe:` paths): only with `--allow-command-sources`
  (env `OSUM_ALLOW_COMMAND_SOURCES=1`);
- `url` sources (and URL storage paths): only those whose scheme and host are in the allow-list given
  by `--allow-url-sources https://data.example.org` (env `OSUM_ALLOW_URL_SOURCES`, comma-separated;
  `scheme://*` allows every host of a scheme, `file://` local file URLs).

`source_problem` is the one check: it walks the whole cut (MixedCut tracks, custom recordings and
arrays included) before anything decodes it; callers turn its answer into a reject whose code is
`unsafe_source:<kind>`. `id_problem` does the same for cut ids (code `unsafe_id`).

The policy of a process is set once by the CLI (`configure`) and kept in the environment, so
processes started from it (Ray's local workers, torchrun ranks, DataLoader workers) see the same;
pipeline configs carry it explicitly to remote workers (`sources:` in the config dict).
"""

from __future__ import annotations

import argparse
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from osum_data.errors import UsageError

COMMAND_ENV = "OSUM_ALLOW_COMMAND_SOURCES"
URLS_ENV = "OSUM_ALLOW_URL_SOURCES"
CODE = "unsafe_source"
ID_CODE = "unsafe_id"
MAX_ID_CHARS = 1024
MAX_NODES = 1_000_000  # dicts and lists walked per cut: a cut bigger than this is not one we take

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_SHELL_SAFE = re.compile(r"^[\w@%+=:,./-]+$")  # shlex.quote leaves these unquoted
# Storage backends of lhotse features/arrays that read local files or memory only.
_LOCAL_STORAGE = {
    "lilcom_files",
    "numpy_files",
    "numpy_hdf5",
    "lilcom_hdf5",
    "chunked_lilcom_hdf5",
    "lilcom_chunky",
    "memory_lilcom",
    "memory_raw",
    "memory_npy",
    "shar",
}


class SourcePolicyError(UsageError):
    """An allow-list entry that cannot be used (a usage error)."""


@dataclass(frozen=True)
class SourcePolicy:
    """What cuts may point at beyond local files and memory (hashable: it keys caches and travels
    in pipeline configs as a plain dict)."""

    allow_command: bool = False
    urls: tuple[str, ...] = ()  # "scheme://host[:port]" or "scheme://*"

    @property
    def is_default(self) -> bool:
        return not self.allow_command and not self.urls

    def to_dict(self) -> dict[str, Any]:
        return {"allow_command": self.allow_command, "urls": list(self.urls)}

    @classmethod
    def from_dict(cls, data: Any, where: str = "sources") -> SourcePolicy:
        if data is None:
            return cls()
        if not isinstance(data, dict) or set(data) - {"allow_command", "urls"}:
            raise SourcePolicyError(f"{where}: expected {{allow_command: bool, urls: [scheme://host, ...]}}")
        allow = data.get("allow_command", False)
        urls = data.get("urls") or []
        if not isinstance(allow, bool) or not isinstance(urls, list):
            raise SourcePolicyError(f"{where}: allow_command must be true/false and urls a list")
        return cls(allow_command=allow, urls=tuple(_check_entry(u) for u in urls))

    def url_allowed(self, url: str) -> bool:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return False
        for entry in self.urls:
            e = urlsplit(entry)
            if e.scheme.lower() != parts.scheme.lower():
                continue
            if e.netloc == "*":
                return True
            if (e.hostname or "") == (parts.hostname or "") and e.port == port:
                return True
        return False


def _check_entry(entry: Any) -> str:
    if not isinstance(entry, str):
        raise SourcePolicyError(f"URL allow-list entry {str(entry)[:80]!r}: expected scheme://host")
    parts = urlsplit(entry.strip())
    if not parts.scheme or "://" not in entry or parts.path.strip("/") or parts.query or parts.fragment:
        raise SourcePolicyError(
            f"URL allow-list entry {entry[:200]!r}: expected scheme://host[:port] (or scheme://*), no path"
        )
    if parts.scheme.lower() == "pipe":
        raise SourcePolicyError("pipe: runs a shell command; use --allow-command-sources for that")
    return entry.strip().rstrip("/")


# --- the policy of this process ------------------------------------------------------------------


_SCOPE: ContextVar[SourcePolicy | None] = ContextVar("source_policy", default=None)


@contextmanager
def policy_scope(policy: SourcePolicy) -> Iterator[None]:
    """Within the block, `current_policy()` is `policy` (a pipeline config's own, while its stage
    parameters, side-input manifests included, are validated)."""
    token = _SCOPE.set(policy)
    try:
        yield
    finally:
        _SCOPE.reset(token)


def current_policy() -> SourcePolicy:
    """The policy in scope, else this process's (from the environment the CLI set; default: local
    sources only)."""
    scoped = _SCOPE.get()
    if scoped is not None:
        return scoped
    return _from_env(os.environ.get(COMMAND_ENV, ""), os.environ.get(URLS_ENV, ""))


@lru_cache(maxsize=8)
def _from_env(command: str, urls: str) -> SourcePolicy:
    allow = command.strip().lower() in ("1", "true", "yes")
    entries = [u for u in re.split(r"[,\s]+", urls) if u]
    return SourcePolicy(allow_command=allow, urls=tuple(_check_entry(u) for u in entries))


def configure(allow_command: bool = False, urls: Iterable[str] = ()) -> SourcePolicy:
    """Set this process's policy (and that of the processes it starts) from command-line flags."""
    policy = SourcePolicy(allow_command=allow_command, urls=tuple(_check_entry(u) for u in urls))
    os.environ[COMMAND_ENV] = "1" if allow_command else "0"
    os.environ[URLS_ENV] = ",".join(policy.urls)
    return policy


def add_cli_flags(parser: argparse.ArgumentParser) -> None:
    """The opt-in flags, on every command that reads manifests and may decode their audio."""
    parser.add_argument(
        "--allow-command-sources",
        action="store_true",
        help="let manifests run their `command` audio sources (and kaldiio/pipe: storage) in a shell",
    )
    parser.add_argument(
        "--allow-url-sources",
        action="append",
        default=[],
        metavar="SCHEME://HOST",
        help="fetch `url` audio sources from this scheme and host (repeatable; scheme://* any host)",
    )


@contextmanager
def policy_env(args: Any) -> Iterator[None]:
    """For one CLI command: this process's policy from its flags (commands without the flags keep
    the environment's), restored afterwards (a `main()` called in-process leaves nothing behind)."""
    if not hasattr(args, "allow_command_sources"):
        yield
        return
    saved = {k: os.environ.get(k) for k in (COMMAND_ENV, URLS_ENV)}
    try:
        urls = [u for text in args.allow_url_sources for u in text.split(",") if u.strip()]
        configure(
            args.allow_command_sources or current_policy().allow_command, [*current_policy().urls, *urls]
        )
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# --- the checks ----------------------------------------------------------------------------------


def source_problem(item: Any, policy: SourcePolicy | None = None) -> tuple[str, str] | None:
    """(reason code, detail) for a cut (a dict as read from a manifest, or a lhotse Cut) that points
    at audio or features this policy does not allow; None when every source is allowed."""
    policy = current_policy() if policy is None else policy
    if not isinstance(item, dict):
        item = item.to_dict()
    stack: list[Any] = [item]
    nodes = 0
    while stack:
        node = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            return f"{CODE}:too_complex", f"more than {MAX_NODES} JSON nodes"
        if isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, dict | list))
            continue
        sources = node.get("sources")
        if isinstance(sources, list):  # a Recording (lhotse reads any such dict as one)
            for s in sources:
                why = _audio_source_problem(s, policy) if isinstance(s, dict) and "type" in s else None
                if why:
                    return why
        if "storage_type" in node:  # Features / Array / TemporalArray's array
            why = _storage_problem(node, policy)
            if why:
                return why
        stack.extend(v for v in node.values() if isinstance(v, dict | list))
    return None


def _short(text: Any) -> str:
    return repr(str(text)[:120])


def _audio_source_problem(s: Any, policy: SourcePolicy) -> tuple[str, str] | None:
    kind, where = s.get("type"), s.get("source")
    if kind in ("memory", "shar"):
        return None
    if kind == "file":
        return _file_problem(where)
    if kind == "command":
        if policy.allow_command:
            return None
        return (
            f"{CODE}:command",
            f"audio source runs a shell command {_short(where)} (--allow-command-sources)",
        )
    if kind == "url":
        return _url_problem(where, policy, "audio source")
    return f"{CODE}:unknown", f"audio source of unknown type {_short(kind)}"


def _file_problem(path: Any) -> tuple[str, str] | None:
    if not isinstance(path, str):
        return f"{CODE}:malformed", "a file audio source without a path"
    if _SCHEME.match(path):
        return (
            f"{CODE}:file_url",
            f"file audio source {_short(path)} looks like a URL (decoders would fetch it)",
        )
    lower = path.lower()
    shelled = lower.endswith(".sph") or (
        lower.endswith(".opus") and os.environ.get("LHOTSE_LEGACY_OPUS_LOADING", "0") == "1"
    )
    if shelled and not _SHELL_SAFE.match(path):
        return (
            f"{CODE}:shell_path",
            f"file audio source {_short(path)} goes through a shell and has shell characters",
        )
    return None


def _url_problem(url: Any, policy: SourcePolicy, what: str) -> tuple[str, str] | None:
    if not isinstance(url, str):
        return f"{CODE}:malformed", f"{what} without a URL"
    if url.startswith("pipe:"):
        if policy.allow_command:
            return None
        return f"{CODE}:command", f"{what} {_short(url)} runs a shell command (--allow-command-sources)"
    if policy.url_allowed(url):
        return None
    return f"{CODE}:url", f"{what} fetches {_short(url)}, not in the URL allow-list (--allow-url-sources)"


def _storage_problem(node: dict[str, Any], policy: SourcePolicy) -> tuple[str, str] | None:
    kind, path = node.get("storage_type"), node.get("storage_path")
    if kind == "kaldiio" or (isinstance(path, str) and path.startswith("pipe:")):
        if policy.allow_command:
            return None
        return (
            f"{CODE}:command",
            f"{kind} storage {_short(path)} may run a shell command (--allow-command-sources)",
        )
    if isinstance(path, str) and _SCHEME.match(path) and "://" in path:
        return _url_problem(path, policy, f"{kind} storage")
    if kind == "lilcom_url":
        return _url_problem(path, policy, f"{kind} storage")
    if kind not in _LOCAL_STORAGE:
        return f"{CODE}:unknown", f"storage of unknown type {_short(kind)}"
    return None


_BAD_CATEGORIES = {"Cc", "Cs", "Zl", "Zp"}


def id_problem(cut_id: Any) -> str | None:
    """Why a cut id cannot be used (it names files, tar members and list lines), or None. Refused:
    a non-string or empty id, more than MAX_ID_CHARS characters, and control characters (NUL,
    newline, tab, DEL, C1), lone surrogates and line/paragraph separators."""
    if not isinstance(cut_id, str) or not cut_id:
        return "empty cut id"
    if len(cut_id) > MAX_ID_CHARS:
        return f"cut id of {len(cut_id)} characters (at most {MAX_ID_CHARS}): {cut_id[:60]!r}..."
    for i, ch in enumerate(cut_id):
        if unicodedata.category(ch) in _BAD_CATEGORIES:
            return f"cut id {cut_id[:80]!r} has control character U+{ord(ch):04X} at position {i}"
    return None


def manifest_problem(path: str, policy: SourcePolicy | None = None) -> str | None:
    """The first cut of a manifest file (jsonl or jsonl.gz) with an unsafe id or source, as one
    line naming it; None when every line is fine (lines that are not cuts are left to the reader)."""
    import gzip
    import json

    policy = current_policy() if policy is None else policy
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                continue
            if not isinstance(d, dict):
                continue
            why = id_problem(d.get("id"))
            if why is None:
                problem = source_problem(d, policy)
                why = problem and f"cut {d['id']!r}: {problem[1]} ({problem[0]})"
            if why:
                return f"line {number}: {why}"
    return None
