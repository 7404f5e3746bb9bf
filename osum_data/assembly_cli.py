"""CLI commands of training-set assembly: `export FORMAT`, `mix`, `report`, `run-all`.

Wired into `osum_data/cli.py` by `add_assembly_commands(sub)`, like the LLM commands.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from osum_data.cli_args import add_engine_flags, add_set_flag, positive_int
from osum_data.errors import OsumError


def _cmd_export(args: argparse.Namespace) -> int:
    from osum_data.export.formats import FORMATS, export

    row = FORMATS[args.format]
    summary = export(
        args.format,
        args.cuts,
        args.out,
        shard_size=args.shard_size,
        relative=args.relative,
        workers=args.workers,
        address=args.address,
        progress=not args.no_progress,
        **{name: getattr(args, name) for name in row.option_names()},
    )
    print(row.describe(summary))
    if row.audited:  # the audit of what was written (osum_data.audit)
        from osum_data.audit import AuditError, audit

        try:
            result = audit(args.out)
        except AuditError as e:  # a layout the audit does not know: say so, the export stands
            print(f"note: {e}", file=sys.stderr)
            return 0
        print(result.table())
        if result.failed:
            print(
                f"osum-data export: error: the export fails its audit ({args.out}/audit.json)",
                file=sys.stderr,
            )
            return 1
    return 0


def _cmd_mix(args: argparse.Namespace) -> int:
    from osum_data.mix.build import build_mix
    from osum_data.mix.config import load_mix_config

    cfg = load_mix_config(args.mix, args.set)
    result = build_mix(
        cfg, args.output, workers=args.workers, address=args.address, progress=not args.no_progress
    )
    s = result.summary
    keys = "in unique rejected rejected_by_reason out hours_out cuts_by_task shar_shards".split()
    print(json.dumps({k: s[k] for k in keys}, indent=2, ensure_ascii=False))
    if s.get("duplicates", {}).get("removed"):
        print(f"duplicates removed: {s['duplicates']['removed']} ({s['duplicates']['by_dataset']})")
    for task, t in s["tasks"].items():
        disjoint = (
            "speaker-disjoint" + (f" ({t['note']})" if t.get("note") else "")
            if t["speaker_disjoint"]
            else f"not speaker-disjoint ({t.get('note', 'no speakers')})"
        )
        print(
            f"{task}: share {t['realised_share']:.4f} (target {t['target_share']:.4f}), "
            f"train {t['train_cuts']}, "
            f"dev {t['dev_cuts']}, test {t['test_cuts']}, {disjoint}"
        )
    print(f"wrote {result.output_dir}/train (Lhotse Shar), dev/<task>, test/<task>, summary.json")
    print(result.audit.table())
    if result.audit.failed:
        raise OsumError(f"the mix fails its audit ({result.output_dir}/audit.json)")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from osum_data.report import build_report

    page = build_report(args.dir, args.out)
    print(f"wrote {page} (open it in a browser)")
    return 0


def _cmd_run_all(args: argparse.Namespace) -> int:
    from osum_data.plan import run_plan

    run_plan(
        args.plan,
        Path(args.output),
        workers=args.workers,
        limit=args.limit,
        progress=not args.no_progress,
        address=args.address,
    )
    return 0


def add_assembly_commands(sub) -> None:
    from osum_data.export.formats import FORMATS

    exp = sub.add_parser("export", help=f"export task samples for a trainer ({', '.join(FORMATS)})")
    exp_sub = exp.add_subparsers(dest="format", required=True)
    for fmt in FORMATS.values():  # the one table of formats (osum_data/export/formats.py)
        p = exp_sub.add_parser(fmt.name, help=fmt.description)
        p.add_argument("cuts", help="cuts manifest, pipeline run folder, or mix folder")
        p.add_argument("out", help="export folder")
        for flag, kwargs in fmt.options.items():
            p.add_argument(flag, **kwargs)
        p.add_argument("--shard-size", type=positive_int, default=None, help="cuts per shard/part")
        p.add_argument(
            "--relative",
            action="store_true",
            help="paths relative to the export folder (all audio inside it: it can be moved)",
        )
        add_engine_flags(p)
        p.set_defaults(func=_cmd_export)

    mix = sub.add_parser("mix", help="weighted multi-task training set (Lhotse Shar) + per-task dev/test")
    mix.add_argument("mix", help="MIX.yaml")
    mix.add_argument("--output", required=True, help="output folder")
    add_set_flag(mix, "override: seed=3, splits.dev=0.05, tasks.asr.weight=2")
    add_engine_flags(mix)
    mix.set_defaults(func=_cmd_mix)

    rep = sub.add_parser("report", help="HTML report with plots of a run, mix or export folder")
    rep.add_argument("dir", help="a run, mix or export folder, or a folder holding several")
    rep.add_argument("--out", default=None, help="report folder (default: DIR/report)")
    rep.set_defaults(func=_cmd_report)

    run_all = sub.add_parser("run-all", help="a plan: pipelines over configured corpora, then the mix")
    run_all.add_argument("plan", help="plan YAML, e.g. pipelines/all.yaml")
    run_all.add_argument("--output", required=True, help="output folder")
    run_all.add_argument("--limit", type=int, default=None, help="inputs from builders: first N items only")
    add_engine_flags(run_all, workers=2)
    run_all.set_defaults(func=_cmd_run_all)
