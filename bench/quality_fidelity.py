"""Do the quality measures rank what they should? And how fast are they?

Real recordings with transcripts (Debian's Asterisk prompts: one speaker, 8 kHz telephone band,
resampled to 16 kHz) and, for the bandwidth measure, which needs wideband sources, espeak-ng
renderings of the same transcripts at 22.05 kHz (synthetic speech: the only wideband speech with
transcripts offline). Each source gets degraded copies with known damage:

  noise20/noise10/noise0  white noise at 20/10/0 dB SNR        -> snr_db, dnsmos_*, (wer)
  lowpass4k               down to 8 kHz and back (wideband set) -> bandwidth_hz
  clipped                 x4 gain, clipped at the original peak -> clipping
  padded                  2x its length of near-silence after   -> speech_ratio
  gain1pct                the same audio 1 % louder             -> quality_duplicates
  wrong_text              another prompt's transcript           -> wer, cer
  foreign_text            a German sentence, declared English   -> lang_match, lang_prob
  looped_text             the transcript said 6 times over      -> max_run, repeat_ratio, units_per_s

For every measure and damage it prints the AUC of telling the damaged copies from their clean
sources (1.0: every damaged copy scores worse than every clean one; 0.5: chance), with the pairs a
measure is meant to catch marked `*`; and throughput per measure as x real time per core (audio
seconds / CPU seconds of the stage, one thread). With `--ray`, the whole section
(pipelines/quality.yaml, filter in keep_measures_only mode) through the runner with 1 and 2 workers.

    python bench/quality_fidelity.py [--sources 24] [--ray] [--json out.json]

The machine this runs on may be shared: CPU-time figures hold, wall-clock ones do not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
from lhotse import Recording, SupervisionSegment  # noqa: E402
from lhotse.cut import MonoCut  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from osum_data.demo import SOUNDS_DIR, asterisk_transcripts  # noqa: E402
from osum_data.quality import damage  # noqa: E402
from osum_data.quality.record import measures_of  # noqa: E402
from osum_data.run.params import validate_params  # noqa: E402
from osum_data.run.stage import get_stage  # noqa: E402

SR = 16000
FOREIGN = [
    "Die Person, die Sie anrufen, ist im Moment leider nicht erreichbar.",
    "Bitte geben Sie jetzt Ihre Kontonummer ein und drücken Sie die Rautetaste.",
    "Vielen Dank für Ihren Anruf, wir verbinden Sie gleich mit einem Mitarbeiter.",
]
# measure -> (direction: +1 higher is worse, -1 lower is worse)
MEASURES = {
    "snr_db": -1, "clipping": 1, "bandwidth_hz": -1, "speech_ratio": -1,
    "dnsmos_sig": -1, "dnsmos_bak": -1, "dnsmos_ovrl": -1, "dnsmos_p808": -1,
    "wer": 1, "cer": 1, "lang_match": -1, "lang_prob": -1,
    "max_run": 1, "repeat_ratio": 1, "units_per_s": 1, "duplicate": 1,
}  # fmt: skip
TARGETS = {
    "noise20": {"snr_db", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808"},
    "noise10": {"snr_db", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808"},
    "noise0": {"snr_db", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808"},
    "lowpass4k": {"bandwidth_hz"},
    "clipped": {"clipping"},
    "padded": {"speech_ratio"},
    "gain1pct": {"duplicate"},
    "wrong_text": {"wer", "cer"},
    "foreign_text": {"lang_match", "lang_prob"},
    "looped_text": {"max_run", "repeat_ratio", "units_per_s"},
}
AUDIO_STAGES = [
    "quality_snr",
    "quality_clipping",
    "quality_bandwidth",
    "quality_speech_ratio",
    "quality_dnsmos",
]
TEXT_STAGES = ["quality_language", "quality_text_checks", "quality_asr"]


def build(name: str, **params):
    defn = get_stage(name)
    return defn.factory(**validate_params(defn, params)[0])


def cut_of(path: Path, cut_id: str, text: str, speaker: str) -> MonoCut:
    rec = Recording.from_file(path, recording_id=cut_id)
    sup = SupervisionSegment(
        id=cut_id,
        recording_id=cut_id,
        start=0,
        duration=rec.duration,
        text=text,
        language="en",
        speaker=speaker,
    )
    return MonoCut(id=cut_id, start=0, duration=rec.duration, channel=0, recording=rec, supervisions=[sup])


def sources(n: int, tmp: Path) -> list[tuple[str, np.ndarray, str, str]]:
    """(id, 16 kHz audio, transcript, set) for n Asterisk prompts and n espeak-ng renderings."""
    import librosa

    texts = asterisk_transcripts()
    names = [k for k in sorted(texts) if "/" not in k and (SOUNDS_DIR / f"{k}.wav").exists()]
    names = [k for k in names if len(texts[k].split()) >= 4][:n]  # sentences, so WER means something
    out = []
    for name in names:
        audio, rate = sf.read(SOUNDS_DIR / f"{name}.wav", dtype="float32")
        out.append(
            (f"ast_{name}", librosa.resample(audio, orig_sr=rate, target_sr=SR), texts[name], "asterisk")
        )
    for i, name in enumerate(names):
        wav = tmp / f"espeak_{i}.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), texts[name]], check=True)
        audio, rate = sf.read(wav, dtype="float32")
        out.append(
            (f"esp_{name}", librosa.resample(audio, orig_sr=rate, target_sr=SR), texts[name], "espeak")
        )
    return out


def variants(srcs, tmp: Path) -> tuple[list[MonoCut], dict[str, tuple[str, str]]]:
    """Every clean cut and its damaged copies; cut id -> (damage, source id)."""
    cuts, meta = [], {}
    texts = [t for _, _, t, _ in srcs]

    def add(cut_id: str, audio: np.ndarray, text: str, kind: str, src: str, speaker: str) -> None:
        path = tmp / f"{cut_id}.flac"
        sf.write(path, np.clip(audio, -1, 1), SR)
        cuts.append(cut_of(path, cut_id, text, speaker))
        meta[cut_id] = (kind, src)

    for i, (sid, audio, text, kind) in enumerate(srcs):
        spk = kind
        add(sid, audio, text, "clean", sid, spk)
        for db in (20, 10, 0):
            add(f"{sid}~noise{db}", damage.with_noise(audio, db, seed=i), text, f"noise{db}", sid, spk)
        if kind == "espeak":
            add(f"{sid}~lowpass4k", damage.low_passed(audio), text, "lowpass4k", sid, spk)
        add(f"{sid}~clipped", damage.hard_clipped(audio), text, "clipped", sid, spk)
        add(f"{sid}~padded", damage.padded_with_silence(audio, seed=i), text, "padded", sid, spk)
        add(f"{sid}~gain1pct", damage.gain_copy(audio), text, "gain1pct", sid, spk)
        add(f"{sid}~wrong_text", audio, texts[(i + 7) % len(texts)], "wrong_text", sid, spk)
        add(f"{sid}~foreign_text", audio, FOREIGN[i % len(FOREIGN)], "foreign_text", sid, spk)
        add(f"{sid}~looped_text", audio, " ".join([text] * 6), "looped_text", sid, spk)
    return cuts, meta


def run_measures(cuts: list[MonoCut], meta, manifest: Path) -> tuple[dict[str, dict], dict[str, float]]:
    """Measures per cut id, and CPU seconds per stage. Audio stages skip the text-only variants
    (same audio as the clean cut), text stages the audio-only ones, so no work is wasted."""
    from lhotse import CutSet

    values: dict[str, dict] = {c.id: {} for c in cuts}
    cpu: dict[str, float] = {}
    text_only = {"wrong_text", "foreign_text", "looped_text"}
    for name in AUDIO_STAGES + TEXT_STAGES:
        params = (
            {"threads": 1}
            if name == "quality_dnsmos"
            else {"cpu_threads": 1}
            if name == "quality_asr"
            else {}
        )
        stage = build(name, **params)
        if name in AUDIO_STAGES:
            todo = [c for c in cuts if meta[c.id][0] not in text_only]
        else:
            todo = [c for c in cuts if meta[c.id][0] in text_only | {"clean", "noise0", "noise10", "noise20"}]
        start = time.process_time()
        result = stage(todo, None)
        cpu[name] = time.process_time() - start
        cpu[name + ":audio_s"] = sum(c.duration for c in todo)
        assert not result.rejected, [(c.id, r) for c, r in result.rejected[:3]]
        for c in result.kept:
            values[c.id].update(measures_of(c))
    # Duplicates: the whole input as its own reference; 1 for a cut rejected as a copy.
    stage = build("quality_duplicates", of=str(manifest), text="off")
    start = time.process_time()
    result = stage(list(CutSet.from_file(manifest)), None)
    cpu["quality_duplicates"] = time.process_time() - start
    cpu["quality_duplicates:audio_s"] = sum(c.duration for c in cuts)
    flagged = {c.id for c, _ in result.rejected}
    for cid in values:
        values[cid]["duplicate"] = float(cid in flagged)
    return values, cpu


def auc_table(values, meta) -> dict[str, dict[str, float]]:
    """AUC[measure][damage]: damaged copies vs clean cuts of the same sources."""
    table: dict[str, dict[str, float]] = {}
    for damage_kind in TARGETS:
        damaged = [cid for cid, (k, _) in meta.items() if k == damage_kind]
        srcs = {meta[cid][1] for cid in damaged}
        clean = [cid for cid, (k, s) in meta.items() if k == "clean" and s in srcs]
        for m, sign in MEASURES.items():
            pairs = [(values[c].get(m), 0) for c in clean] + [(values[d].get(m), 1) for d in damaged]
            if any(v is None for v, _ in pairs):
                continue
            scores = [sign * v for v, _ in pairs]
            labels = [y for _, y in pairs]
            table.setdefault(m, {})[damage_kind] = float(roc_auc_score(labels, scores))
    return table


def ray_section(manifest: Path, tmp: Path, audio_s: float) -> dict[str, float]:
    """Wall seconds of pipelines/quality.yaml (keep_measures_only) with 1 and 2 workers."""
    import ray

    from osum_data.run.config import load_pipeline
    from osum_data.run.runner import run_pipeline

    pipeline = Path(__file__).resolve().parents[1] / "pipelines" / "quality.yaml"
    cfg = load_pipeline(pipeline, ["quality_filter.keep_measures_only=true", "shard_size=20"])
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    out = {}
    try:
        for workers in (1, 2):
            start = time.perf_counter()
            run_pipeline(cfg, manifest, tmp / f"ray{workers}", workers=workers, progress=False)
            out[f"workers{workers}_wall_s"] = time.perf_counter() - start
            out[f"workers{workers}_xrt"] = audio_s / out[f"workers{workers}_wall_s"]
    finally:
        ray.shutdown()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sources", type=int, default=24, help="Asterisk prompts (and as many espeak-ng ones)")
    ap.add_argument("--ray", action="store_true", help="also time the whole section on Ray, 1 and 2 workers")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args()
    from lhotse import CutSet

    with tempfile.TemporaryDirectory(prefix="quality_bench_") as d:
        tmp = Path(d)
        srcs = sources(args.sources, tmp)
        cuts, meta = variants(srcs, tmp)
        manifest = tmp / "cuts.jsonl.gz"
        CutSet.from_cuts(cuts).to_file(manifest)
        minutes = sum(c.duration for c in cuts) / 60
        load = os.getloadavg()[0]
        print(
            f"{len(srcs)} sources (Asterisk, espeak-ng), {len(cuts)} cuts, {minutes:.1f} min; load {load:.1f}"
        )
        values, cpu = run_measures(cuts, meta, manifest)
        table = auc_table(values, meta)
        report(table, cpu, cuts)
        if args.json:
            args.json.write_text(json.dumps({"auc": table, "cpu": cpu}, indent=1))
        if args.ray:
            ray_figures = ray_section(manifest, tmp, sum(c.duration for c in cuts))
            print("\nWhole section on Ray (pipelines/quality.yaml, keep_measures_only), wall clock:")
            for w in (1, 2):
                print(f"  {w} worker(s): {ray_figures[f'workers{w}_wall_s']:.1f} s, "
                      f"{ray_figures[f'workers{w}_xrt']:.1f} x real time")  # fmt: skip
            if args.json:
                args.json.write_text(json.dumps({"auc": table, "cpu": cpu, "ray": ray_figures}, indent=1))


def report(table, cpu, cuts) -> None:
    damages = list(TARGETS)
    print("\nAUC, damaged copy vs its clean source (* = the damage the measure is meant to catch)\n")
    print("| measure | " + " | ".join(damages) + " |")
    print("|---|" + "---|" * len(damages))
    for m in MEASURES:
        row = []
        for k in damages:
            v = table.get(m, {}).get(k)
            row.append("" if v is None else f"{v:.2f}{'*' if m in TARGETS[k] else ''}")
        print(f"| {m} | " + " | ".join(row) + " |")
    print("\nThroughput per measure (one thread; x real time per core = audio s / CPU s)\n")
    print("| stage | audio s | CPU s | x real time per core |")
    print("|---|---|---|---|")
    stages = [*AUDIO_STAGES, *TEXT_STAGES, "quality_duplicates"]
    for s in stages:
        audio_s, cpu_s = cpu[s + ":audio_s"], cpu[s]
        print(f"| {s} | {audio_s:.0f} | {cpu_s:.1f} | {audio_s / max(cpu_s, 1e-9):.1f} |")
    section_cpu = sum(cpu[s] for s in stages)
    section_audio = sum(c.duration for c in cuts)
    xrt = section_audio / section_cpu
    print(f"| whole section (sum) | {section_audio:.0f} | {section_cpu:.1f} | {xrt:.1f} |")
    missed = [(m, k, v) for k, ms in TARGETS.items() for m in ms if (v := table.get(m, {}).get(k, 0.0)) < 0.9]
    print("\nTargets under 0.9:", ", ".join(f"{m}/{k}={v:.2f}" for m, k, v in missed) or "none")


if __name__ == "__main__":
    main()
