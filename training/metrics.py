"""Per-task metrics of decoded outputs, reading targets with the task registry's own parsers.

- transcripts (asr, and the transcript part of every ASR+X target): WER and CER (jiwer, corpus
  level) after light normalisation (case, punctuation, spaces), as OSUM lowercases English;
- labels (ser, sgc, sap, ssr, ved, multi-label keys): accuracy, a sample counts when every label
  matches (events compared as sets), beside the majority-class baseline of the same references
  (the accuracy of always answering the most frequent label set: a model that always says
  <FEMALE> scores exactly that);
- srwt: mean absolute start/end error in seconds over words that align between reference and
  hypothesis, plus WER of the words;
- sttc: token F1 of the answer against the reference answer (SQuAD-style bag of words after
  normalisation; characters for Chinese), beside the transcript's WER/CER;
- a hypothesis the parser rejects counts as wrong for labels and as its tag-stripped text for WER.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections import Counter, defaultdict
from typing import Any

import jiwer

from osum_data.tasks import FormatError, LabelError, Parsed, parse_target, registry

_TAGS = re.compile(r"<[^<>]*>")


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)
    return " ".join(text.split())


def _chars(text: str) -> str:
    return normalize(text).replace(" ", "")


def _parse(key: str, text: str) -> Parsed | None:
    try:
        return parse_target(key, text)
    except (FormatError, LabelError):
        return None


def _tokens(text: str) -> list[str]:
    """Words, with every CJK character a token of its own."""
    out = []
    for word in normalize(text).split():
        if any("\u4e00" <= c <= "\u9fff" for c in word):
            out += list(word)
        else:
            out.append(word)
    return out


def answer_f1(ref: str, hyp: str) -> float:
    r, h = Counter(_tokens(ref)), Counter(_tokens(hyp))
    common = sum((r & h).values())
    if not r or not h:
        return float(r == h)
    if common == 0:
        return 0.0
    precision, recall = common / sum(h.values()), common / sum(r.values())
    return 2 * precision * recall / (precision + recall)


def _label_key(labels: dict[str, Any]) -> str:
    """'age=adult, gender=female' (list values sorted and joined with '+')."""
    return ", ".join(
        f"{k}={'+'.join(sorted(v)) if isinstance(v, list) else v}" for k, v in sorted(labels.items())
    )


def _labels_equal(a: dict[str, Any], b: dict[str, Any]) -> bool:
    norm = {k: sorted(v) if isinstance(v, list) else v for k, v in a.items()}
    return norm == {k: sorted(v) if isinstance(v, list) else v for k, v in b.items()}


def _timestamp_errors(ref: Parsed, hyp: Parsed) -> list[float]:
    """|start| and |end| differences of words matched in order by their normalised text."""
    rw, hw = ref.words or [], hyp.words or []
    sm = difflib.SequenceMatcher(
        a=[normalize(w.text) for w in rw], b=[normalize(w.text) for w in hw], autojunk=False
    )
    errs = []
    for block in sm.get_matching_blocks():
        for i in range(block.size):
            r, h = rw[block.a + i], hw[block.b + i]
            errs += [abs(r.start - h.start), abs(r.end - h.end)]
    return errs


def task_metrics(rows: list[dict[str, str]]) -> dict[str, dict[str, Any]]:
    """rows: {task (tag key), ref, hyp} -> {task key: metrics}."""
    reg = registry()
    groups: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        groups[r["task"]].append(r)
    out: dict[str, dict[str, Any]] = {}
    for key, items in sorted(groups.items()):
        task, x_only = reg.task_for_key(key)
        m: dict[str, Any] = {"task": task.id, "n": len(items)}
        refs, hyps, correct, parse_errors, ts_errs, label_sets, f1s = [], [], 0, 0, [], Counter(), []
        for r in items:
            ref, hyp = _parse(key, r["ref"]), _parse(key, r["hyp"])
            if ref is None:
                raise ValueError(f"reference target of {key} does not parse: {r['ref']!r}")
            parse_errors += hyp is None
            if ref.transcript is not None:
                refs.append(ref.transcript)
                hyps.append((hyp.transcript or "") if hyp else _TAGS.sub("", r["hyp"]))
            if ref.labels:
                correct += bool(hyp and _labels_equal(ref.labels, hyp.labels))
                label_sets[_label_key(ref.labels)] += 1
            if ref.answer is not None:
                f1s.append(answer_f1(ref.answer, (hyp.answer or "") if hyp else _TAGS.sub("", r["hyp"])))
            if ref.words is not None and hyp is not None:
                ts_errs += _timestamp_errors(ref, hyp)
        m["parse_errors"] = parse_errors
        if refs and not (task.format == "chat" and x_only):
            m["wer"] = jiwer.wer([normalize(t) or "<empty>" for t in refs], [normalize(t) for t in hyps])
            m["cer"] = jiwer.cer([_chars(t) or "<empty>" for t in refs], [_chars(t) for t in hyps])
        if task.format == "labels":
            m["label_accuracy"] = correct / len(items)
            if label_sets:
                top, count = label_sets.most_common(1)[0]
                m["majority_baseline"] = count / len(items)
                m["majority_labels"] = top
        if f1s:
            m["answer_f1"] = sum(f1s) / len(f1s)
        if task.format == "timestamps":
            m["timestamp_mae_s"] = sum(ts_errs) / len(ts_errs) if ts_errs else None
        out[key] = m
    return out
