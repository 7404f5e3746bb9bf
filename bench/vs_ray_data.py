"""A peer in the benchmarks (issue 19, item 6): the same stage chain in a Ray Data `map_batches` actor
pool and in our runner, same input, same output ids (asserted), with 1 and 2 workers. Prints each
side's rate and the ratio Ray Data time / our time (> 1: ours is faster).

The chain is built-in per-cut stages: `check_audio` (decodes every cut: missing, truncated, empty,
NaN, silent) then `normalize_text`, on real recorded speech (the demo's Asterisk prompts, cycled to
distinct ids). Both sides build the stages the same way from the same pipeline config, one chain per
actor, batches of `shard_size` cuts; both read the input in the driver and end with the kept cuts in a
gzipped manifest and the rejected ids accounted for. Ours also writes its per-shard files, done markers
and summary (its resume and accounting guarantees); Ray Data's side writes only the two outputs.
Warm-up: one small run of each before timing (Ray start, imports, worker start-up).
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import ray
import ray.data
from common import demo_manifest

from osum_data.manifest_io import read_jsonl
from osum_data.run.config import load_pipeline
from osum_data.run.runner import ensure_ray, run_pipeline

PIPELINE = """\
name: vs_ray_data
shard_size: {shard_size}
seed: 0
stages:
  - stage: check_audio
  - stage: normalize_text
"""


class Chain:
    """One Ray Data actor: the pipeline's stages, built once, applied to each batch in order."""

    def __init__(self, pipeline: str, files_dir: str):
        from osum_data.run.stage import get_stage

        self.cfg = load_pipeline(pipeline)
        self.stages = [(s.name, get_stage(s.stage).factory(**s.typed_params())) for s in self.cfg.stages]
        self.files_dir = Path(files_dir)
        self.batches = 0

    def __call__(self, batch: dict) -> dict:
        from lhotse.serialization import deserialize_item

        from osum_data.run.stage import StageContext

        cuts = [deserialize_item(json.loads(line)) for line in batch["line"]]
        rejected: list[str] = []
        for name, fn in self.stages:
            ctx = StageContext(self.cfg.seed, shard_index=self.batches, run_dir=self.files_dir, stage=name)
            result = fn(cuts, ctx)
            cuts = result.kept
            rejected += [cut.id for cut, _ in result.rejected]
        self.batches += 1
        rows = [json.dumps(c.to_dict()) for c in cuts]
        return {
            "kind": ["kept"] * len(rows) + ["rejected"] * len(rejected),
            "value": rows + rejected,
        }


def ray_data_run(pipeline: Path, manifest: Path, out: Path, workers: int, batch: int) -> tuple[set, set]:
    out.mkdir(parents=True)
    lines = [json.dumps(d) for d in read_jsonl(manifest)]
    ds = ray.data.from_items([{"line": x} for x in lines], override_num_blocks=-(-len(lines) // batch))
    ds = ds.map_batches(
        Chain,
        fn_constructor_kwargs={"pipeline": str(pipeline), "files_dir": str(out / "files")},
        batch_size=batch,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=1,
        batch_format="numpy",
    )
    kept, rejected = set(), set()
    with gzip.open(out / "cuts.jsonl.gz", "wt", encoding="utf-8") as f:
        for b in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for kind, value in zip(b["kind"], b["value"], strict=True):
                if kind == "kept":
                    f.write(value + "\n")
                    kept.add(json.loads(value)["id"])
                else:
                    rejected.add(str(value))
    return kept, rejected


def ours_run(pipeline: Path, manifest: Path, out: Path, workers: int) -> tuple[set, set]:
    run_pipeline(load_pipeline(pipeline), manifest, out, workers=workers, progress=False)
    kept = {d["id"] for d in read_jsonl(out / "cuts.jsonl.gz")}
    rejected = {d["id"] for d in read_jsonl(out / "rejects.jsonl.gz")}
    return kept, rejected


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cuts", type=int, default=4000)
    ap.add_argument("--shard-size", type=int, default=100, help="cuts per shard / Ray Data batch")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pipeline = tmp / "chain.yaml"
        pipeline.write_text(PIPELINE.format(shard_size=args.shard_size))
        manifest = demo_manifest(tmp / "in.jsonl.gz", args.cuts)
        small = demo_manifest(tmp / "small.jsonl.gz", 2 * args.shard_size)
        ensure_ray(None, 2)
        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        ours_run(pipeline, small, tmp / "warm_ours", 2)
        ray_data_run(pipeline, small, tmp / "warm_rd", 2, args.shard_size)
        print(
            f"cuts: {args.cuts} (real 8 kHz speech), batch/shard: {args.shard_size}, "
            f"cores: {os.cpu_count()}, load: {os.getloadavg()[0]:.1f}"
        )
        print("chain: check_audio -> normalize_text")
        for workers in (1, 2):
            t_ours, ours = timed(lambda w=workers: ours_run(pipeline, manifest, tmp / f"ours{w}", w))
            t_rd, rd = timed(
                lambda w=workers: ray_data_run(pipeline, manifest, tmp / f"rd{w}", w, args.shard_size)
            )
            assert ours == rd, (
                f"outputs differ: kept {len(ours[0])} vs {len(rd[0])}, "
                f"rejected {len(ours[1])} vs {len(rd[1])}"
            )
            assert len(ours[0]) + len(ours[1]) == args.cuts
            print(
                f"{workers} worker(s): ours {args.cuts / t_ours:8.1f} cuts/s ({t_ours:.2f} s), "
                f"Ray Data {args.cuts / t_rd:8.1f} cuts/s ({t_rd:.2f} s); same ids: kept {len(ours[0])}, "
                f"rejected {len(ours[1])}"
            )
            ratio = t_rd / t_ours
            print(f"  ratio Ray Data time / ours, {workers} worker(s): {ratio:.2f} (> 1: ours faster)")


if __name__ == "__main__":
    main()
