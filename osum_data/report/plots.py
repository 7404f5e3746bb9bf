"""The report's PNG plots (matplotlib, no display: the Agg backend). Each returns its file, or None
when the section has nothing to show for it (no labels, no augmentation, no rejects, no LLM use)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from osum_data.report.stats import DURATION_BINS, SNR_BINS, Section  # noqa: E402

DPI = 100
# Labels, task names and file names come from the data: text is literal, never mathtext (a label
# with `$...$` would otherwise abort the report with a ParseFatalException).
plt.rcParams.update(
    {"font.size": 9, "axes.spines.top": False, "axes.spines.right": False, "text.parse_math": False}
)


def _save(fig, path: Path, top: float = 1.0) -> Path:
    fig.tight_layout(rect=(0, 0, 1, top))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _barh(
    items: dict[str, float], path: Path, xlabel: str, title: str, color: str = "#4878a8"
) -> Path | None:
    if not items:
        return None
    names = list(items)[::-1]
    values = [items[n] for n in names]
    fig, ax = plt.subplots(figsize=(7, max(1.8, 0.9 + 0.28 * len(names))))
    ax.barh(names, values, color=color)
    ax.set_xlim(0, max(values) * 1.15 or 1)
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:.3g}", va="center", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return _save(fig, path)


def hours_per_task(s: Section, path: Path) -> Path | None:
    return _barh(dict(sorted(s.hours_by_task.items())), path, "hours", "Hours per task")


def hours_per_label(s: Section, path: Path) -> Path | None:
    return _barh(dict(sorted(s.hours_by_label.items())), path, "hours", "Hours per label", "#6a9955")


def durations(s: Section, path: Path) -> Path | None:
    if not s.durations:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.2))
    edges = np.minimum(DURATION_BINS, 65.0)
    longest = 0.0
    for task, counts in sorted(s.durations.items()):
        ax.stairs(counts, edges, label=f"{task} ({int(counts.sum())})", linewidth=1.5)
        longest = max(longest, edges[np.flatnonzero(counts).max() + 1])
    ax.set_xlim(0, longest * 1.05)
    ax.set_xlabel("duration (s); the 45-60 s bin holds longer cuts up to 60 s, the last one all over 60 s")
    ax.set_ylabel("cuts")
    ax.set_title("Duration histogram per task")
    ax.legend(fontsize=8)
    return _save(fig, path)


def label_sources(s: Section, path: Path) -> Path | None:
    """Per label field, stacked bars of each value's cuts by where the label came from."""
    if not s.label_sources:
        return None
    fields = sorted({f for f, _, _ in s.label_sources})
    sources = sorted({src for _, _, src in s.label_sources})
    colors = dict(zip(sources, plt.cm.tab10.colors, strict=False))
    rows = [len({v for ff, v, _ in s.label_sources if ff == f}) for f in fields]
    fig, axes = plt.subplots(
        len(fields),
        1,
        figsize=(7, 1.2 + sum(0.9 + 0.25 * r for r in rows)),
        squeeze=False,
        height_ratios=[0.9 + 0.25 * r for r in rows],
    )
    for ax, f in zip(axes[:, 0], fields, strict=True):
        values = sorted({v for ff, v, _ in s.label_sources if ff == f})
        left = np.zeros(len(values))
        for src in sources:
            n = np.array([s.label_sources.get((f, v, src), 0) for v in values], dtype=float)
            if n.any():
                ax.barh(values, n, left=left, color=colors[src], label=src)
                left += n
        ax.set_title(f"{f} by label source", fontsize=9)
        ax.set_xlabel("cuts")
    handles = {h.get_label(): h for ax in axes[:, 0] for h in ax.containers}
    fig.legend(list(handles.values()), list(handles), loc="upper center", ncol=len(handles), fontsize=8)
    return _save(fig, path, top=1 - 0.35 / fig.get_figheight())


def snr(s: Section, path: Path) -> Path | None:
    if not s.snr_values:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.0))
    ax.stairs(s.snr, SNR_BINS, fill=True, color="#c07030")
    ax.set_xlabel("SNR (dB) of augmented cuts (custom.augment: snr, or its noise step's snr_db)")
    ax.set_ylabel("cuts")
    extra = f", {s.snr_out_of_range} outside the axis" if s.snr_out_of_range else ""
    ax.set_title(f"SNR distribution ({s.snr_values} augmented cuts{extra})")
    return _save(fig, path)


def rejects(s: Section, path: Path) -> Path | None:
    return _barh(dict(sorted(s.rejects.items())), path, "cuts", "Rejects by reason (stage:code)", "#b04848")


def llm_tokens(s: Section, path: Path) -> Path | None:
    tokens = s.llm_tokens()
    if not any(v.get("prompt_tokens") or v.get("completion_tokens") for v in tokens.values()):
        return None
    stages = list(tokens)
    prompt = [tokens[st].get("prompt_tokens", 0) for st in stages]
    completion = [tokens[st].get("completion_tokens", 0) for st in stages]
    fig, ax = plt.subplots(figsize=(7, 0.8 + 0.4 * len(stages)))
    ax.barh(stages, prompt, label="prompt", color="#4878a8")
    ax.barh(stages, completion, left=prompt, label="completion", color="#e0a040")
    ax.set_xlabel("tokens")
    ax.set_title("LLM tokens per stage")
    ax.legend(fontsize=8)
    return _save(fig, path)


def shares(s: Section, path: Path) -> Path | None:
    tasks = s.summary.get("tasks") or {}
    if not tasks:
        return None
    names = list(tasks)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7, 3.0))
    ax.bar(x - 0.2, [tasks[t]["target_share"] for t in names], 0.4, label="target", color="#999999")
    ax.bar(x + 0.2, [tasks[t]["realised_share"] for t in names], 0.4, label="realised", color="#4878a8")
    ax.set_xticks(x, names)
    ax.set_ylabel(f"share of training {s.summary.get('unit', 'cuts')}")
    ax.set_title("Mix: target vs realised task shares")
    ax.legend(fontsize=8)
    return _save(fig, path)


PLOTS = {
    "hours_per_task": hours_per_task,
    "shares": shares,
    "hours_per_label": hours_per_label,
    "durations": durations,
    "label_sources": label_sources,
    "snr": snr,
    "rejects": rejects,
    "llm_tokens": llm_tokens,
}
