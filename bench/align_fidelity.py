"""Aligner fidelity and throughput on real recorded speech with known word boundaries.

The test set joins single-word Asterisk prompts (digits, letters) with pauses of known length
(`osum_data.demo.joined.word_test_set`), so every word's true start and end is known to 5 ms. For each
backend it prints the median and 90th-percentile boundary error (starts and ends of kept words),
how many utterances it kept, its real-time factor per core (align time / audio time, one thread),
and the speed-up of 2 worker processes over 1 on the same cuts, all measured side by side in one
run (the machine is shared: read the ratios, not the absolute times).

    python bench/align_fidelity.py [--utterances 30] [--ctc-model DIR] [--whisper-model DIR]

Guessed pronunciations are measured apart: the `pocketsphinx+g2p` run takes half of the test set's
distinct words out of the dictionary (every other one, sorted), so espeak-ng pronounces them, and
reports the boundary error of guessed and dictionary words separately, from the same utterances,
with the guessed words' confidence (speech share, `label/align/confidence.py`).

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
    if backend == "pocketsphinx+g2p":
        from osum_data.label.align.sphinx import PocketSphinxAligner

        # no floor here: the benchmark measures every guessed word, the floor is the pipeline's
        return PocketSphinxAligner(dictionary=args["reduced_dictionary"], min_guessed_confidence=0.0)
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


def boundary_errors(kept: list[dict], reference: dict, kind: str | None = None) -> list[float]:
    """|aligned - true| of every word's start and end; `kind` 'guessed' or 'dictionary' keeps only
    the words whose pronunciation was (not) guessed."""
    from osum_data.label.align.words import spoken_form

    errs = []
    for d in kept:
        ref = reference[d["id"]]
        guessed = set(d["supervisions"][0].get("custom", {}).get("alignment_guessed_words") or [])
        for item, r in zip(d["supervisions"][0]["alignment"]["word"], ref, strict=True):
            if kind is not None and bool(guessed & set(spoken_form(item[0], "en"))) != (kind == "guessed"):
                continue
            errs += [abs(item[1] - r["start"]), abs(item[1] + item[2] - r["end"])]
    return errs


def guessed_scores(kept: list[dict]) -> list[float]:
    """Confidence (speech share) of every word whose pronunciation was guessed."""
    from osum_data.label.align.words import spoken_form

    out = []
    for d in kept:
        guessed = set(d["supervisions"][0].get("custom", {}).get("alignment_guessed_words") or [])
        items = d["supervisions"][0]["alignment"]["word"]
        out += [item[3] for item in items if guessed & set(spoken_form(item[0], "en"))]
    return out


def reduced_dictionary(cut_dicts: list[dict], path: Path) -> int:
    """The shipped dictionary without every other distinct word of the test set (sorted): those
    words get guessed pronunciations. Returns how many words were taken out."""
    from osum_data.label.align.sphinx import shipped_model
    from osum_data.label.align.words import reference_words

    words = sorted(
        {t for d in cut_dicts for w in reference_words(d["supervisions"][0]["text"]) for t in w.spoken}
    )
    out = set(words[::2])
    lines = Path(shipped_model()[1]).read_text().splitlines()
    path.write_text("\n".join(ln for ln in lines if ln.split()[0].split("(")[0] not in out) + "\n")
    return len(out)


def _row(
    name: str, kept: int, total: int, errs: list[float], t1: float | None, t2: float | None, audio_s: float
):
    errs_ms = np.array(errs) * 1000
    med = f"{np.median(errs_ms):.0f}" if len(errs_ms) else "-"
    p90 = f"{np.percentile(errs_ms, 90):.0f}" if len(errs_ms) else "-"
    speed = f"{t1 / audio_s:>10.3f}{audio_s / t1:>12.1f}{t1 / t2:>13.2f}" if t1 and t2 else ""
    print(f"{name:<28}{kept:>3}/{total:<3}{med:>11}{p90:>9}{speed}")


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
            f"{'backend':<28}{'kept':>7}{'median ms':>11}{'p90 ms':>9}{'RTF/core':>10}"
            f"{'x realtime':>12}{'2w speed-up':>13}"
        )
        print(header)
        print("-" * len(header))
        for backend in backends:
            kept, t1 = run_workers(backend, args, cut_dicts, 1)
            _, t2 = run_workers(backend, args, cut_dicts, 2)
            _row(backend, len(kept), len(cuts), boundary_errors(kept, reference), t1, t2, audio_s)
        args["reduced_dictionary"] = str(root / "reduced.dict")
        removed = reduced_dictionary(cut_dicts, root / "reduced.dict")
        kept, _ = run_workers("pocketsphinx+g2p", args, cut_dicts, 1)
        for kind in ("dictionary", "guessed"):
            _row(
                f"pocketsphinx+g2p {kind}",
                len(kept),
                len(cuts),
                boundary_errors(kept, reference, kind),
                None,
                None,
                audio_s,
            )
        scores = np.array(guessed_scores(kept))
        if scores.size:
            print(
                f"  ({removed} of the test words taken out of the dictionary; their guessed words' "
                f"confidence: median {np.median(scores):.2f}, min {scores.min():.2f}, "
                f"{np.mean(scores < 0.5):.0%} under the default floor 0.5)"
            )
        if not opts.ctc_model:
            print("ctc           (no trained checkpoint offline: pass --ctc-model DIR to measure it)")
        print(
            "\nboundary error: |aligned - true| of every kept word's start and end; RTF/core: align time "
            "/ audio time on one thread; 2w speed-up: 1-worker time / 2-worker time on the same cuts"
        )


if __name__ == "__main__":
    main()
