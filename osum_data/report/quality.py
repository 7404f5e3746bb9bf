"""The report's quality section (issue #17): per measure, a histogram of the run's cuts (kept and
rejected stacked) with the `quality_filter` thresholds drawn as lines, and the count of cuts per
reject code of the quality stages. Measures are read from `custom.quality` of the first
supervision (or the cut), thresholds from the run's `pipeline.yaml`; a run without measures adds
nothing to the page.
"""

from __future__ import annotations

import gzip
import html
import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import yaml

QUALITY_STAGES_PREFIX = "quality_"
BINS = 30


def _holder(d: dict[str, Any]) -> dict[str, Any]:
    sups = d.get("supervisions") or []
    return ((sups[0].get("custom") if sups and isinstance(sups[0], dict) else None) or d.get("custom")) or {}


def _lines(path: Path):
    if not path.exists():
        return
    with (
        gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8") as f
    ):
        for raw in f:
            if raw.strip():
                yield json.loads(raw)


def collect_quality(run_dir: Path) -> tuple[dict[str, dict[str, list[float]]], Counter, Counter]:
    """(measure -> {"kept": [...], "rejected": [...]}, cuts per quality reject code, flags in
    keep_measures_only mode) of one run folder."""
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"kept": [], "rejected": []})
    codes: Counter = Counter()
    flags: Counter = Counter()
    for name, side in (("cuts.jsonl.gz", "kept"), ("rejects.jsonl.gz", "rejected")):
        for d in _lines(run_dir / name):
            if not isinstance(d, dict):
                continue
            holder = _holder(d)
            for measure, v in (holder.get("quality") or {}).items():
                if _number(v):
                    values[measure][side].append(float(v))
            flags.update(holder.get("quality_flags") or [])
            reject = (d.get("custom") or {}).get("reject") or {}
            if str(reject.get("stage", "")).startswith(QUALITY_STAGES_PREFIX):
                codes[f"{reject['stage']}:{reject.get('code', 'unknown')}"] += 1
    return dict(values), codes, flags


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def compare_sources(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Per measure of a run's cuts (kept and rejected): the mean over all cuts, and over each pair of
    an augmented copy (`custom.augment`, linked by `custom.source_cut_id`) and its source in the same
    run, the sources' mean, the copies' mean and how many copies score lower. A measure that ranks
    damage must separate the pairs: noise lowers SNR and DNSMOS. {} when the run has no measures."""
    measures: dict[str, dict[str, float]] = {}  # cut id -> measure -> value
    copies: dict[str, str] = {}  # copy id -> source id
    for name in ("cuts.jsonl.gz", "rejects.jsonl.gz"):
        for d in _lines(run_dir / name):
            if not isinstance(d, dict) or not isinstance(d.get("id"), str):
                continue
            found = {k: float(v) for k, v in (_holder(d).get("quality") or {}).items() if _number(v)}
            if found:
                measures[d["id"]] = found
            custom = d.get("custom") or {}
            if custom.get("augment") and isinstance(custom.get("source_cut_id"), str):
                copies[d["id"]] = custom["source_cut_id"]
    rows: dict[str, dict[str, Any]] = {}
    for m in sorted({k for v in measures.values() for k in v}):
        every = [v[m] for v in measures.values() if m in v]
        pairs = [
            (measures[src][m], measures[cp][m])
            for cp, src in copies.items()
            if m in measures.get(cp, {}) and m in measures.get(src, {})
        ]
        rows[m] = {"mean": sum(every) / len(every), "n": len(every), "pairs": len(pairs)}
        if pairs:
            rows[m]["sources_mean"] = sum(a for a, _ in pairs) / len(pairs)
            rows[m]["copies_mean"] = sum(b for _, b in pairs) / len(pairs)
            rows[m]["copy_lower"] = sum(1 for a, b in pairs if b < a)
    return rows


def _num(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def format_comparison(rows: dict[str, dict[str, Any]]) -> str:
    """`compare_sources` as aligned text (the plan's closing output)."""
    head = ["measure", "mean", "n", "sources", "noisy copies", "copy lower"]
    lines = [
        [
            m,
            _num(r["mean"]),
            str(r["n"]),
            _num(r["sources_mean"]) if r["pairs"] else "-",
            _num(r["copies_mean"]) if r["pairs"] else "-",
            f"{r['copy_lower']}/{r['pairs']}" if r["pairs"] else "-",
        ]
        for m, r in rows.items()
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *lines, strict=False)]
    fmt = "  ".join(f"{{:{w}}}" for w in widths[:-1]) + "  {}"
    return "\n".join(fmt.format(*cells) for cells in [head, *lines])


def _comparison_html(rows: dict[str, dict[str, Any]]) -> str:
    if not any(r["pairs"] for r in rows.values()):
        return ""
    trs = "".join(
        f"<tr><td>{html.escape(m)}</td><td class='n'>{_num(r['sources_mean'])}</td>"
        f"<td class='n'>{_num(r['copies_mean'])}</td><td class='n'>{r['copy_lower']}/{r['pairs']}</td></tr>"
        for m, r in rows.items()
        if r["pairs"]
    )
    return (
        "<p>Sources vs their augmented (noise/reverb) copies, mean per measure over the pairs:</p>"
        "<table><tr><th>measure</th><th>sources</th><th>noisy copies</th><th>copy lower</th></tr>"
        f"{trs}</table>"
    )


def thresholds_of(run_dir: Path) -> dict[str, dict[str, Any]]:
    """measure -> {min, max, code} from the run's quality_filter entries (last one wins)."""
    path = run_dir / "pipeline.yaml"
    if not path.exists():
        return {}
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for entry in config.get("stages") or []:
        if isinstance(entry, dict) and entry.get("stage") == "quality_filter":
            out.update({k: v for k, v in (entry.get("thresholds") or {}).items() if isinstance(v, dict)})
    return out


def histogram(
    measure: str, kept: list[float], rejected: list[float], limit: dict[str, Any] | None, path: Path
):
    from osum_data.report.plots import _save, plt

    data = [v for v in kept + rejected]
    lo, hi = min(data), max(data)
    edges = [lo + (hi - lo) * i / BINS for i in range(BINS + 1)] if hi > lo else [lo - 0.5, lo + 0.5]
    fig, ax = plt.subplots(figsize=(7, 2.6))
    ax.hist(
        [kept, rejected], bins=edges, stacked=True, color=["#4878a8", "#b04848"], label=["kept", "rejected"]
    )
    for key in ("min", "max"):
        if limit and limit.get(key) is not None:
            ax.axvline(limit[key], color="#222", linestyle="--", linewidth=1)
            ax.text(limit[key], ax.get_ylim()[1] * 0.95, f" {key} {limit[key]:g}", fontsize=8, va="top")
    ax.set_xlabel(f"custom.quality.{measure}")
    ax.set_ylabel("cuts")
    ax.legend(fontsize=8)
    ax.set_title(f"{measure}: {len(kept)} kept, {len(rejected)} rejected")
    return _save(fig, path)


def quality_html(kind: str, run_dir: Path, out: Path, slug: str) -> str:
    """The HTML of a run section's quality part (histograms written under `out`), or ''."""
    if kind != "run":
        return ""
    values, codes, flags = collect_quality(run_dir)
    if not values:
        return ""
    limits = thresholds_of(run_dir)
    parts = ["<h3>Quality measures</h3>"]
    if codes or flags:
        rows = [(c, n, "rejected") for c, n in sorted(codes.items())]
        rows += [(c, n, "flagged (keep_measures_only)") for c, n in sorted(flags.items())]
        trs = "".join(
            f"<tr><td>{html.escape(c)}</td><td class='n'>{n}</td><td>{w}</td></tr>" for c, n, w in rows
        )
        parts.append(f"<table><tr><th>code</th><th>cuts</th><th></th></tr>{trs}</table>")
    comparison = _comparison_html(compare_sources(run_dir))
    if comparison:
        parts.append(comparison)
    for measure in sorted(values):
        v = values[measure]
        safe = re.sub(r"[^A-Za-z0-9_]+", "-", measure)[:60]  # names come from the data: no paths
        png = histogram(
            measure, v["kept"], v["rejected"], limits.get(measure), out / f"{slug}-quality-{safe}.png"
        )
        parts.append(f"<img src='{html.escape(png.name)}' alt='quality {html.escape(measure)}'>")
    return "\n".join(parts)
