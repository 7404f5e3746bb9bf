"""`osum-data report DIR`: an HTML page with PNG plots of a run, a mix, an export, or a folder of them.

Writes `DIR/report/index.html` and its images next to it (relative links: the folder can be copied
or served as it is). Per section: the summary numbers, hours per task and per label, duration
histograms, label distributions by `label_source`, the SNR distribution of augmented cuts, rejects
by reason and the LLM tokens each stage reported; a mix adds its target vs realised task shares.
The output folder of a plan (run-all, `make demo`) starts with the plan's per-task table
(`tasks.json`, osum_data.report.tasks), tasks that did not arrive marked.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path
from typing import Any

from osum_data.errors import UsageError
from osum_data.report.quality import quality_html
from osum_data.report.stats import Section, SummaryError, collect, find_sections
from osum_data.report.tasks import read_table

REPORT_DIR = "report"
CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; } td, th { padding: 2px 10px; text-align: left; }
th { background: #f0f0f0; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
img { display: block; margin: 0.5em 0 1.5em; max-width: 100%; }
.note { color: #666; font-size: 0.9em; }
tr.missing td { background: #fdd; } .missing-note { color: #a00; font-weight: bold; }
"""


class ReportError(UsageError):
    """DIR holds nothing to report on, or the report cannot be written where asked."""


def build_report(root: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write the report of `root` and return the path of its index.html."""
    from osum_data.report import plots

    root = Path(root)
    if not root.is_dir():
        raise ReportError(f"report: {root} is not a folder")
    out = Path(out_dir) if out_dir else root / REPORT_DIR
    if out.exists() and not out.is_dir():
        raise ReportError(f"report: --out {out} is a file; give a folder for the report")
    try:
        found = find_sections(root)
    except SummaryError as e:
        raise ReportError(f"report: {e}") from None
    if not found:
        raise ReportError(
            f"report: {root} is not a run, mix or export folder (no summary.json of one), and holds none"
        )
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    parts = [f"<h1>osum-data report: {html.escape(str(root))}</h1>"]
    table = read_table(root)
    if table is not None:
        parts.append(_tasks_html(table))
    if len(found) > 1:  # a table of contents
        items = "".join(
            f"<li><a href='#s{i}'>{html.escape(kind)}: {html.escape(str(path.relative_to(root)))}</a></li>"
            for i, (kind, path, _) in enumerate(found)
        )
        parts.append(f"<ul>{items}</ul>")
    for i, (kind, path, summary) in enumerate(found):
        section = collect(kind, path, summary)
        slug = f"{i:02d}-{re.sub(r'[^A-Za-z0-9]+', '-', path.name).strip('-') or kind}"
        images = []
        for name, fn in plots.PLOTS.items():
            png = fn(section, out / f"{slug}-{name}.png")
            if png is not None:
                images.append((name, png.name))
        quality = quality_html(kind, path, out, slug)  # issue #17: histograms + quality reject codes
        parts.append(f"<section id='s{i}'>{_section_html(section, images)}{quality}</section>")
    page = out / "index.html"
    page.write_text(
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>osum-data report</title>"
        f"<style>{CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n",
        encoding="utf-8",
    )
    return page


def _tasks_html(table: dict[str, Any]) -> str:
    """The plan's per-task table; rows of tasks that did not arrive (or whose run failed) marked."""
    bad = [r for r in table["tasks"] if r.get("status") != "ok"]
    if bad or table.get("other_problems"):
        names = ", ".join(r["task"] for r in bad)
        what = f"Incomplete: {len(bad)} task(s) missing or failed: {names}"
        head = f"<p class='missing-note'>{html.escape(what)}</p>"
    else:
        head = f"<p>All {len(table['tasks'])} planned tasks arrived.</p>"
    has_mix = any("mix_samples" in r for r in table["tasks"])
    cols = (
        ["task", "status", "samples", "hours"]
        + (["mix samples"] if has_mix else [])
        + ["runs", "main rejects"]
    )
    trs = []
    for r in table["tasks"]:
        rejects = ", ".join(f"{k} {v}" for k, v in (r.get("rejects") or {}).items()) or "-"
        cells = [
            f"<td>{html.escape(r['task'])}</td>",
            f"<td>{html.escape(r.get('status', '?'))}</td>",
            f"<td class='n'>{_fmt(int(r.get('samples', 0)))}</td>",
            f"<td class='n'>{float(r.get('hours', 0.0)):.4f}</td>",
        ]
        if has_mix:
            cells.append(f"<td class='n'>{html.escape(str(r.get('mix_samples', '-')))}</td>")
        cells += [
            f"<td>{html.escape(', '.join(r.get('runs') or []))}</td>",
            f"<td>{html.escape(rejects)}</td>",
        ]
        marked = " class='missing'" if r.get("status") != "ok" else ""
        trs.append(f"<tr{marked}>" + "".join(cells) + "</tr>")
        for problem in r.get("problems") or []:
            trs.append(f"<tr{marked}><td></td><td colspan='{len(cols) - 1}'>{html.escape(problem)}</td></tr>")
    for problem in table.get("other_problems") or []:
        trs.append(
            f"<tr class='missing'><td></td><td colspan='{len(cols) - 1}'>{html.escape(problem)}</td></tr>"
        )
    thead = "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>"
    return (
        f"<section id='tasks'><h2>Tasks of the plan</h2>{head}<table>{thead}{''.join(trs)}</table></section>"
    )


def _table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(
        f"<tr><th>{html.escape(k)}</th><td class='n'>{html.escape(_fmt(v))}</td></tr>" for k, v in rows
    )
    return f"<table>{cells}</table>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _disjoint(task: dict[str, Any]) -> str:
    return "yes" if task["speaker_disjoint"] else "no: " + html.escape(task.get("note", "no speakers"))


def _audit_html(folder: Path) -> str:
    """The table of `osum-data audit` (its audit.json), where the folder has one; warn and fail rows."""
    try:
        audit = json.loads((folder / "audit.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    rows = [r for r in audit.get("rows", []) if isinstance(r, dict) and r.get("status") != "ok"]
    head = f"<p>Audit: {html.escape(str(audit.get('status', '?')).upper())} ({audit.get('fail', 0)} fail, "
    head += f"{audit.get('warn', 0)} warn, {audit.get('ok', 0)} ok; audit.json)</p>"
    trs = "".join(
        f"<tr><td>{html.escape(str(r.get('check')))}</td><td>{html.escape(str(r.get('task')))}</td>"
        f"<td>{html.escape(str(r.get('status')))}</td><td>{html.escape(str(r.get('detail')))}</td></tr>"
        for r in rows
    )
    table = (
        f"<table><tr><th>check</th><th>task</th><th>status</th><th>detail</th></tr>{trs}</table>"
        if rows
        else ""
    )
    return head + table


def _section_html(s: Section, images: list[tuple[str, str]]) -> str:
    sm = s.summary
    rows: list[tuple[str, Any]] = []
    if s.kind == "run":
        rows = [(k, sm[k]) for k in ("in", "out", "rejected", "derived", "hours_in", "hours_out") if k in sm]
        rows.append(("accounting", sm.get("accounting", "")))
    elif s.kind == "mix":
        rows = [
            (k, sm[k]) for k in ("in", "unique", "rejected", "out", "hours_out", "unit", "seed") if k in sm
        ]
        rows.append(("temperature", sm.get("temperature") or "none"))
    else:
        rows = [(k, sm[k]) for k in ("format", "cuts", "exported", "rejected", "hours") if k in sm]
    rows.append(("cuts described below", s.cuts))
    body = [f"<h2>{html.escape(s.title)}</h2>", _table(rows)]
    if s.kind == "mix":
        head = (
            "<tr><th>task</th><th>target share</th><th>realised</th><th>train cuts</th><th>dev</th>"
            "<th>test</th><th>speaker-disjoint</th></tr>"
        )
        trs = "".join(
            f"<tr><td>{html.escape(t)}</td><td class='n'>{v['target_share']:.3f}</td>"
            f"<td class='n'>{v['realised_share']:.3f}</td><td class='n'>{v['train_cuts']}</td>"
            f"<td class='n'>{v['dev_cuts']}</td><td class='n'>{v['test_cuts']}</td>"
            f"<td>{_disjoint(v)}</td></tr>"
            for t, v in sm.get("tasks", {}).items()
        )
        body.append(f"<table>{head}{trs}</table>")
    body.append(_audit_html(s.path))
    tokens = s.llm_tokens()
    if tokens:
        keys = sorted({k for v in tokens.values() for k in v})
        head = "<tr><th>stage</th>" + "".join(f"<th>{html.escape(k)}</th>" for k in keys) + "</tr>"
        trs = "".join(
            f"<tr><td>{html.escape(st)}</td>"
            + "".join(f"<td class='n'>{_fmt(v.get(k, 0))}</td>" for k in keys)
            + "</tr>"
            for st, v in tokens.items()
        )
        body.append(f"<p>LLM use per stage:</p><table>{head}{trs}</table>")
    if not s.snr_values:
        body.append("<p class='note'>No augmented cuts (no SNR in custom.augment) in this section.</p>")
    for name, file in images:
        body.append(f"<img src='{html.escape(file)}' alt='{html.escape(name.replace('_', ' '))}'>")
    return "\n".join(body)
