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
                if (
                    isinstance(v, int | float)
                    and not isinstance(v, bool)
                    and v == v
                    and abs(v) != float("inf")
                ):
                    values[measure][side].append(float(v))
            flags.update(holder.get("quality_flags") or [])
            reject = (d.get("custom") or {}).get("reject") or {}
            if str(reject.get("stage", "")).startswith(QUALITY_STAGES_PREFIX):
                codes[f"{reject['stage']}:{reject.get('code', 'unknown')}"] += 1
    return dict(values), codes, flags


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
    for measure in sorted(values):
        v = values[measure]
        safe = re.sub(r"[^A-Za-z0-9_]+", "-", measure)[:60]  # names come from the data: no paths
        png = histogram(
            measure, v["kept"], v["rejected"], limits.get(measure), out / f"{slug}-quality-{safe}.png"
        )
        parts.append(f"<img src='{html.escape(png.name)}' alt='quality {html.escape(measure)}'>")
    return "\n".join(parts)
