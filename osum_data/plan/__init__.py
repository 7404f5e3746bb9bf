"""Plans: several pipelines over configured corpora, then the mix, exports, report and a short training.

`osum-data run-all PLAN.yaml --output DIR` and `osum-data demo` (with `pipelines/demo.yaml`) both run
a plan. Sections, each optional except `runs`:

    inputs:                      # named input manifests
      asterisk: {builder: "osum_data.demo:asterisk_input"}   # a function (output_dir, limit) -> cuts path
      iemocap: {prepare: iemocap, corpus_dir: /data/IEMOCAP}  # `osum-data prepare` into DIR/inputs/NAME
      mine: {manifest: /data/mine/cuts.jsonl.gz}              # an existing manifest
    runs:                        # pipelines, in order
      - {name: asr, pipeline: pipelines/asr.yaml, input: asterisk, set: [shard_size=100]}
        # input: an input name, an earlier run's name (its kept cuts), a list of them (concatenated),
        # or none (a source pipeline); absent: the first input. In `set:`, ${name} is the manifest
        # of that input or earlier run (side inputs: augment.noise=${noise}).
        # A run whose pipeline plans no task (a quality run labelling another run's samples) is no
        # dataset of the mix, not exported and not counted in the per-task table (`samples:` says
        # otherwise explicitly).
    export:                      # per-run exports (each run's OUT/<run>/<format>/)
      osum: {shards: true}
    mix:                         # MIX.yaml content; `tasks:` may be left out: every run becomes a
      shard_size: 200            # dataset of each task its samples belong to (weight 1 each), and a
      tasks:                     # dataset may name a run instead of a manifest
        asr: {weight: 1, datasets: [{run: asr}]}
    mix_export: [osum, hf]       # exports of the mix (`osum-data export` formats) into DIR/export/<format>
    report: true                 # `osum-data report DIR`
    train:                       # a short run of the bundled trainer on the mixed Shar
      config: training/configs/tiny.yaml
      steps: 4
      set: [data.max_duration=20]

Paths in the plan are relative to the current directory (the repository root for the bundled plans).

The plan ends with a per-task table (osum_data.report.tasks, also `OUT/tasks.json` and the top of the
report): each task a run's pipeline makes, its samples and hours, the mix's samples and the main
reject reasons. A planned task with 0 samples, or a run whose rejects are mostly endpoint failures,
makes the plan fail (PlanIncomplete, exit 1) after the rest of it ran; "Done" means every task
arrived. A second run into the same folder reuses what is unchanged: finished shards, the LLM
cache, and the training checkpoints when the mix and the trainer config are the same (see `_train`).
Input and run names become folder names: letters, digits, `_` and `-`. `load_plan` checks the whole
plan before any work (run-all would otherwise stop at a typo hours in, after the first runs).

The package: `config` (the typed `Plan` and `load_plan`), `run` (executing a validated plan),
`examples` (one sample of each run to listen to).
"""

from __future__ import annotations

from osum_data.plan.config import Plan, expand_paths, load_plan
from osum_data.plan.run import PlanIncomplete, mix_config_of, run_plan

__all__ = ["Plan", "PlanIncomplete", "expand_paths", "load_plan", "mix_config_of", "run_plan"]
