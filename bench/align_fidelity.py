"""Aligner fidelity and throughput on real recorded speech with known word boundaries.

The test set joins single-word Asterisk prompts (digits, letters) with pauses of known length
(`osum_data.demo.joined.word_test_set`), so every word's true start and end is known to 5 ms. For each
backend it prints the median and 90th-percentile boundary error (starts and ends of kept words),
how many utterances it kept, its real-time factor per core (align time / audio time, one thread),
and the speed-up of 2 worker processes over 1 on the same cuts, all measured side by side in one
run (the machine is shared: read the ratios, not the absolute times).

    python bench/align_fidelity.py [--utterances 30] [--ctc-model DIR] [--whisper-model DIR]

CTC needs a trained wav2vec2/MMS checkpoint (`--ctc-model`): none can be had offline, so without
one its row is skipped (a random checkpoint would measure nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from lhotse import CutSet  # noqa: E402

from osum_data.corpora import prepare  # noqa: E402
from osum_data.demo.joined import word_test_set  # noqa: E402
from osum_data.run.stage import StageContext  # noqa: E402

_stage = None


def make_stage(backend: str, args: dict):
    if backend == "pocketsphinx":
        from osum_data.label.align.sphinx import PocketSphinxAligner

        return PocketSphinxAligner()
    if backend == "whisper":
        from osum_data.label.align.whisper import WhisperAligner

        return WhisperAligner(model_dir=args.get("whisper_model"), device="cpu", cpu_threads=1)
    if backend == "ctc":
        from osum_data.label.align.ctc import CTCAligner

        return CTCAligner(model_dir=args["ctc_model"], device="cpu")
    raise ValueError(backend)


def _init(backend: str, args: dict) -> None:
    global _stage
    import torch

    torch.set_num_threads(1)
    _stage = make_stage(backend, args)


def _align(cut_dicts: list[dict]) -> tuple[list[dict], float]:
    from lhotse.serialization import deserialize_item

    cuts = [deserialize_item(d) for d in cut_dicts]
    t0 = time.perf_counter()
    res = _stage(cuts, StageContext(0, 0, Path(tempfile.gettempdir()), "align"))
    return [c.to_dict() for c in res.kept], time.perf_counter() - t0


def run_workers(backend: str, args: dict, cut_dicts: list[dict], workers: int) -> tuple[list[dict], float]:
    """Wall time of `workers` processes (models loaded and warmed first) aligning all cuts."""
    with ProcessPoolExecutor(workers, initializer=_init, initargs=(backend, args)) as pool:
        list(pool.map(_align, [cut_dicts[:1]] * workers))  # load + warm up every worker
        chunks = [cut_dicts[i::workers] for i in range(workers)]
        t0 = time.perf_counter()
        results = list(pool.map(_align, chunks))
        wall = time.perf_counter() - t0
    return [d for kept, _ in results for d in kept], wall


def boundary_errors(kept: list[dict], reference: dict) -> list[float]:
    errs = []
    for d in kept:
        ref = reference[d["id"]]
        for item, r in zip(d["supervisions"][0]["alignment"]["word"], ref, strict=True):
            errs += [abs(item[1] - r["start"]), abs(item[1] + item[2] - r["end"])]
    return errs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--utterances", type=int, default=30)
    ap.add_argument("--words", type=int, default=5)
    ap.add_argument("--ctc-model")
    ap.add_argument("--whisper-model")
    opts = ap.parse_args()
    args = {"ctc_model": opts.ctc_model, "whisper_model": opts.whisper_model}
    backends = ["pocketsphinx", "whisper"] + (["ctc"] if opts.ctc_model else [])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        word_test_set(root / "corpus", opts.utterances, opts.words, seed=7)
        prepare("tsv", root / "corpus", root / "import")
        reference = json.loads((root / "corpus" / "reference.json").read_text())
        cuts = [c.resample(16000) for c in CutSet.from_file(root / "import" / "cuts.jsonl.gz")]
        cut_dicts = [c.to_dict() for c in cuts]
        audio_s = sum(c.duration for c in cuts)
        print(
            f"test set: {len(cuts)} utterances x {opts.words} words, {audio_s:.1f} s of real speech "
            f"(Asterisk prompts, 8 kHz, joined with 0.15-0.6 s pauses)\n"
        )
        header = (
            f"{'backend':<14}{'kept':>7}{'median ms':>11}{'p90 ms':>9}{'RTF/core':>10}"
            f"{'x realtime':>12}{'2w speed-up':>13}"
        )
        print(header)
        print("-" * len(header))
        for backend in backends:
            kept, t1 = run_workers(backend, args, cut_dicts, 1)
            _, t2 = run_workers(backend, args, cut_dicts, 2)
            errs = np.array(boundary_errors(kept, reference)) * 1000
            med = f"{np.median(errs):.0f}" if len(errs) else "-"
            p90 = f"{np.percentile(errs, 90):.0f}" if len(errs) else "-"
            print(
                f"{backend:<14}{len(kept):>3}/{len(cuts):<3}{med:>11}{p90:>9}{t1 / audio_s:>10.3f}"
                f"{audio_s / t1:>12.1f}{t1 / t2:>13.2f}"
            )
        if not opts.ctc_model:
            print("ctc           (no trained checkpoint offline: pass --ctc-model DIR to measure it)")
        print(
            "\nboundary error: |aligned - true| of every kept word's start and end; RTF/core: align time "
            "/ audio time on one thread; 2w speed-up: 1-worker time / 2-worker time on the same cuts"
        )


if __name__ == "__main__":
    main()
