"""`osum-data audit DIR`: is a mix (or an export) safe to train and evaluate on?

Checks, per task and across tasks (one row each, status ok / warn / fail):

- leak:lineage  a dev/test cut shares a source key (recording, clip, source cut, joined prompt; see
                osum_data.mix.lineage) with a training cut of the same or another task: fail;
- leak:speaker  a dev/test cut's speaker speaks in train: fail, unless the mix declared the speaker
                one it could not hold out (`speakers_not_held_out`: a task with too few voices): warn;
- leak:text     a dev/test transcript (normalised) is also a training transcript: warn (read-speech
                corpora share prompts across speakers by design; the audio is what must not leak);
- duplicates    two unique samples with the same audio, task key and target: fail;
- balance       a class (target tag) of train missing from a dev/test split, or a split of one class
                where the task has several: warn;
- instructions  an instruction that contradicts its target (osum_data.tasks.prompts.instruction_agrees;
                without it: asks for separate lines while the target is one line): warn;
- coverage      a task without dev or test cuts, a task key of train absent from a held-out split: warn.

An OSUM export folder (data.list / data_config.yaml) gets the checks of
`osum_data.export.osum_audit.check_osum_export` when that module is present, and, when it was
exported from a mix (`summary.json` names it), the mix's checks. The table is printed,
`DIR/audit.json` holds the rows; `audit` exits 1 when a row fails.

Memory: the training side keeps 8-byte hashes (plus a task index) per key, speaker and text, in
arrays; the held-out side its cuts' keys; the cut files are streamed (repeated copies count once).
"""

from __future__ import annotations

import json
import re
import unicodedata
from array import array
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from osum_data.errors import UsageError
from osum_data.export.mix_folder import mixed_id
from osum_data.manifest_io import atomic_path, read_jsonl
from osum_data.mix.lineage import key_hash, lineage, sample_key, speaker

try:  # the task pools' rule (issue 16/4); the audit works without it
    from osum_data.tasks.prompts import instruction_agrees
except ImportError:  # pragma: no cover
    instruction_agrees = None

OK, WARN, FAIL = "ok", "warn", "fail"
TAG = re.compile(r"<([A-Z][A-Z0-9_]*)>")
NEWLINE_WORDS = re.compile(r"separate lines?|new ?line|line break|另起一行|换行|分行", re.IGNORECASE)
MAX_EXAMPLES = 3


class AuditError(UsageError):
    """DIR is not something the audit can read (one line for the user)."""


@dataclass
class AuditResult:
    folder: Path
    kind: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, check: str, task: str, status: str, detail: str, count: int = 0) -> None:
        self.rows.append({"check": check, "task": task, "status": status, "detail": detail, "count": count})

    @property
    def status(self) -> str:
        states = {r["status"] for r in self.rows}
        return FAIL if FAIL in states else WARN if WARN in states else OK

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    def brief(self) -> dict[str, Any]:
        counts = Counter(r["status"] for r in self.rows)
        return {
            "status": self.status,
            **{s: counts.get(s, 0) for s in (OK, WARN, FAIL)},
            "failed": [f"{r['check']} {r['task']}" for r in self.rows if r["status"] == FAIL],
            "file": str(self.folder / "audit.json"),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "audit",
            "kind": self.kind,
            "folder": str(self.folder),
            **self.brief(),
            "rows": self.rows,
        }

    def table(self) -> str:
        """One table: check, task, status, detail (details cut to one line)."""
        head = ("check", "task", "status", "detail")
        rows = [(r["check"], r["task"], r["status"].upper(), r["detail"]) for r in self.rows]
        w = [max(len(str(x[i])) for x in [head, *rows]) for i in range(3)]
        lines = [f"{head[0]:{w[0]}}  {head[1]:{w[1]}}  {head[2]:{w[2]}}  {head[3]}"]
        lines.append("-" * (sum(w) + 6 + 40))
        for r in rows:
            lines.append(f"{r[0]:{w[0]}}  {r[1]:{w[1]}}  {r[2]:{w[2]}}  {r[3]}")
        b = self.brief()
        lines.append(
            f"audit of {self.folder} ({self.kind}): {b['status'].upper()} ({b[FAIL]} fail, {b[WARN]} warn)"
        )
        return "\n".join(lines)


def audit(folder: str | Path, write: bool = True) -> AuditResult:
    """Audit a mix folder or an export folder; writes `audit.json` into it unless `write` is False."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AuditError(f"audit: {folder} is not a folder")
    summary = _summary(folder)
    osum = (folder / "data.list").exists() or (folder / "data_config.yaml").exists()
    if summary.get("type") == "mix" or (not osum and any((folder / "train").glob("cuts.*.jsonl.gz"))):
        result = _audit_mix(folder, summary)
    elif osum or any(folder.glob("*/data.list")):
        result = AuditResult(folder, "osum-export")
        _osum_checks(result, folder)
        mix = Path(str(summary.get("mix") or ""))
        if summary.get("mix") and (mix / "summary.json").is_file():  # the mix this export realises
            result.rows += _audit_mix(mix, _summary(mix)).rows
    else:
        raise AuditError(
            f"audit: {folder} is neither a mix folder (summary.json of type mix, train/) nor an OSUM "
            "export (data.list, data_config.yaml)"
        )
    if write:
        with atomic_path(folder / "audit.json") as tmp:
            tmp.write_text(json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n")
    return result


def _summary(folder: Path) -> dict[str, Any]:
    path = folder / "summary.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _osum_checks(result: AuditResult, folder: Path) -> None:
    try:
        from osum_data.export.osum_audit import check_osum_export  # provided by the OSUM export
    except ImportError:
        result.add("osum", "*", WARN, "osum_data.export.osum_audit is not installed: OSUM checks not run")
        return
    for row in check_osum_export(folder):
        result.add(
            row["check"], row.get("task", "*"), row["status"], row.get("detail", ""), row.get("count", 0)
        )


# --- a mix folder ----------------------------------------------------------------------------------


def normalise_text(text: str) -> str:
    """Lower case, letters and digits only (any script), single spaces: what counts as the same
    transcript."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(ch if ch.isalnum() or ch.isspace() else " " for ch in text)
    return " ".join(text.split())


def _cut_files(folder: Path) -> list[tuple[str, Path]]:
    """(split folder name, cuts file) of a mix: train/, dev/<task>/, test/<task>/."""
    out = [("train", f) for f in sorted((folder / "train").glob("cuts.*.jsonl.gz"))]
    for split in ("dev", "test"):
        for f in sorted((folder / split).glob("*/cuts.*.jsonl.gz")):
            out.append((split, f))
    return out


@dataclass
class _Held:
    """One dev/test cut, as much as the checks need (held-out sets are small: max_cuts per task)."""

    id: str
    task: str
    split: str
    keys: set[int]
    speaker: int | None
    text: int | None


class _Index:
    """Hashes seen on the training side, each with the index of its task: 9 bytes an entry, sorted
    once, looked up by binary search."""

    def __init__(self) -> None:
        self.h, self.t = array("Q"), array("H")

    def add(self, h: int, task: int) -> None:
        self.h.append(h)
        self.t.append(task)

    def freeze(self) -> None:
        h = np.frombuffer(self.h, np.uint64) if len(self.h) else np.zeros(0, np.uint64)
        t = np.frombuffer(self.t, np.uint16) if len(self.t) else np.zeros(0, np.uint16)
        order = np.argsort(h, kind="stable")
        self.sorted_h, self.sorted_t = h[order], t[order]
        self.h = self.t = None

    def tasks(self, h: int) -> set[int]:
        key = np.uint64(h)
        a = int(np.searchsorted(self.sorted_h, key, "left"))
        b = int(np.searchsorted(self.sorted_h, key, "right"))
        return {int(x) for x in self.sorted_t[a:b]}


def _audit_mix(folder: Path, summary: dict[str, Any]) -> AuditResult:
    result = AuditResult(folder, "mix")
    files = _cut_files(folder)
    if not files:
        raise AuditError(f"audit: {folder} holds no cuts (train/cuts.*.jsonl.gz, dev/<task>/, test/<task>/)")
    declared = {key_hash(s) for s in summary.get("speakers_not_held_out") or []}
    names: dict[str, int] = {}  # task -> index
    for t in summary.get("tasks") or {}:
        names.setdefault(t, len(names))
    keys, spks, texts = _Index(), _Index(), _Index()
    held: list[_Held] = []
    sample_keys = array("Q")  # one per unique sample, every split
    labels: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    keys_of: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    sizes: dict[str, Counter] = defaultdict(Counter)
    bad_instructions: dict[str, list[str]] = defaultdict(list)
    bad_counts: Counter = Counter()
    for split_dir, path in files:
        for d in read_jsonl(path):
            custom = d.get("custom") or {}
            mix = custom.get("mix") or {}
            if _repeated(d, mix):
                continue  # another copy of a sample the mix repeats: the sample counts once
            task = mix.get("task") or str(custom.get("task") or "?")
            k = names.setdefault(task, len(names))
            split = mix.get("split") or split_dir
            sizes[task][split] += 1
            sample_keys.append(sample_key(d))
            target = str(custom.get("target") or "")
            for tag in set(TAG.findall(target)):
                labels[task][split][tag] += 1
            keys_of[task][split][str(custom.get("task"))] += 1
            instruction = str(custom.get("instruction") or "")
            if _disagrees(str(custom.get("task") or ""), instruction, target):
                bad_counts[task] += 1
                if len(bad_instructions[task]) < MAX_EXAMPLES:
                    bad_instructions[task].append(str(d.get("id")))
            hashes = {key_hash(x) for x in lineage(d)}
            spk = speaker(d)
            spk_h = key_hash(spk) if spk else None
            text = _text(d)
            if split == "train":
                for h in hashes:
                    keys.add(h, k)
                if spk_h is not None:
                    spks.add(spk_h, k)
                if text is not None:
                    texts.add(text, k)
            else:
                held.append(_Held(str(d.get("id")), task, split, hashes, spk_h, text))
    for index in (keys, spks, texts):
        index.freeze()
    order = sorted(sizes)
    by_index = {i: t for t, i in names.items()}
    _leaks(
        result,
        order,
        held,
        {"leak:lineage": keys, "leak:speaker": spks, "leak:text": texts},
        declared,
        by_index,
    )
    _duplicates(result, order, files, np.frombuffer(sample_keys, np.uint64) if len(sample_keys) else None)
    _balance(result, order, labels, sizes)
    _instructions(result, order, bad_instructions, bad_counts, sizes)
    _coverage(result, order, sizes, keys_of)
    return result


def _disagrees(key: str, instruction: str, target: str) -> bool:
    """Whether an instruction contradicts its target: the task pools' own rule
    (osum_data.tasks.prompts.instruction_agrees) where it knows the key, else the obvious one (it asks
    for separate lines, the target is one line)."""
    if instruction_agrees is not None and instruction:
        try:
            return instruction_agrees(key, instruction) is not None
        except KeyError:  # a key the registry does not know
            pass
    return bool(NEWLINE_WORDS.search(instruction)) and "\n" not in target


def _repeated(d: dict[str, Any], mix: dict[str, Any]) -> bool:
    """True for the second and later copies of a training sample: the mix writes the first as
    `<dataset>.<id>` or `<dataset>.<id>_repeat0` (lhotse's `repeat`), the others `_repeat1`, ..."""
    if not mix.get("dataset") or not mix.get("source_id"):
        return False
    base = mixed_id(mix["dataset"], mix["source_id"])
    return d.get("id") not in (base, f"{base}_repeat0")


def _text(d: dict[str, Any]) -> int | None:
    sups = d.get("supervisions") or []
    text = sups[0].get("text") if sups and isinstance(sups[0], dict) else None
    norm = normalise_text(text) if isinstance(text, str) else ""
    return key_hash(norm) if norm else None


LEAK_WORDS = {
    "leak:lineage": "share a recording, clip or source with",
    "leak:speaker": "share a speaker with",
    "leak:text": "have the transcript of",
}


def _leaks(result, order, held, indexes, declared, by_index) -> None:
    for check, index in indexes.items():
        for task in order:
            mine = [h for h in held if h.task == task]
            if not mine:
                continue
            within, across, examples, declared_only = 0, 0, [], 0
            for h in mine:
                if check == "leak:lineage":
                    hit = set().union(*(index.tasks(x) for x in h.keys)) if h.keys else set()
                else:
                    value = h.speaker if check == "leak:speaker" else h.text
                    hit = index.tasks(value) if value is not None else set()
                if not hit:
                    continue
                if check == "leak:speaker" and h.speaker in declared:
                    declared_only += 1
                    continue
                hit_names = {by_index[i] for i in hit}
                if task in hit_names:
                    within += 1
                else:
                    across += 1
                if len(examples) < MAX_EXAMPLES:
                    examples.append(f"{h.split}:{h.id} (train of {', '.join(sorted(hit_names))})")
            n = within + across
            if n:
                result.add(
                    check,
                    task,
                    WARN if check == "leak:text" else FAIL,
                    f"{n} of {len(mine)} dev/test cuts {LEAK_WORDS[check]} training cuts (same task "
                    f"{within}, other tasks {across}); e.g. {'; '.join(examples)}",
                    n,
                )
            elif declared_only:
                result.add(
                    check,
                    task,
                    WARN,
                    f"{declared_only} of {len(mine)} dev/test cuts are by a speaker the mix could not hold "
                    "out (a task with fewer than splits.min_speakers voices; summary.json "
                    "speakers_not_held_out)",
                    0,
                )
            else:
                result.add(check, task, OK, f"{len(mine)} dev/test cuts: none shared with train", 0)


def _duplicates(result, order, files, sample_keys) -> None:
    """Sample keys seen more than once among the unique samples; a second pass over the files (only
    when there are any) names a few."""
    dup: set[int] = set()
    if sample_keys is not None:
        uniq, counts = np.unique(sample_keys, return_counts=True)
        dup = {int(x) for x in uniq[counts > 1]}
    per_task: Counter = Counter()
    examples: dict[str, list[str]] = defaultdict(list)
    if dup:
        seen: dict[int, str] = {}
        for _, path in files:
            for d in read_jsonl(path):
                mix = (d.get("custom") or {}).get("mix") or {}
                if _repeated(d, mix):
                    continue
                sk = sample_key(d)
                if sk not in dup:
                    continue
                task = mix.get("task") or "?"
                if sk in seen:
                    per_task[task] += 1
                    if len(examples[task]) < MAX_EXAMPLES:
                        examples[task].append(f"{d.get('id')} = {seen[sk]}")
                else:
                    seen[sk] = str(d.get("id"))
    for task in order:
        if per_task[task]:
            result.add(
                "duplicates",
                task,
                FAIL,
                f"{per_task[task]} sample(s) repeat another's audio, task key and target; e.g. "
                + "; ".join(examples[task]),
                per_task[task],
            )
        else:
            result.add("duplicates", task, OK, "every sample is unique (audio, task key, target)", 0)


def _balance(result, order, labels, sizes) -> None:
    for task in order:
        per = labels.get(task)
        if not per:
            continue
        classes = set().union(*per.values())
        if len(classes) < 2:
            continue
        problems = []
        train = set(per.get("train", {}))
        for split in ("dev", "test"):
            if not sizes[task][split]:
                continue
            have = set(per.get(split, {}))
            missing = sorted(train - have)
            if len(have) == 1:
                problems.append(f"{split} is one class ({next(iter(have))})")
            elif missing:
                problems.append(f"{split} lacks {', '.join(missing[:6])}{'…' if len(missing) > 6 else ''}")
            only = sorted(have - train)
            if only:
                problems.append(f"{', '.join(only[:6])} in {split} but not in train")
        if problems:
            result.add("balance", task, WARN, "; ".join(problems), len(problems))
        else:
            result.add("balance", task, OK, f"{len(classes)} classes in every split", 0)


def _instructions(result, order, bad, counts, sizes) -> None:
    for task in order:
        total = sum(sizes[task].values())
        if counts[task]:
            result.add(
                "instructions",
                task,
                WARN,
                f"{counts[task]} of {total} instructions ask for separate lines while the target is one "
                f"line; e.g. {', '.join(bad[task])}",
                counts[task],
            )
        else:
            result.add("instructions", task, OK, f"{total} instructions agree with their targets", 0)


def _coverage(result, order, sizes, keys_of) -> None:
    for task in order:
        n = sizes[task]
        problems = [f"no {s} cuts" for s in ("dev", "test") if not n[s]]
        train_keys = set(keys_of[task].get("train", {}))
        for s in ("dev", "test"):
            if n[s]:
                missing = sorted(train_keys - set(keys_of[task].get(s, {})))
                if missing:
                    problems.append(f"{s} lacks key(s) {', '.join(missing)}")
        detail = f"train {n['train']}, dev {n['dev']}, test {n['test']}"
        if problems:
            result.add("coverage", task, WARN, f"{detail}: {'; '.join(problems)}", len(problems))
        else:
            result.add("coverage", task, OK, detail, 0)
