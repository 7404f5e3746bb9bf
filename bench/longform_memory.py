"""Peak memory of the long-form front end (check_audio, downmix, segment_vad) on a 10-minute and a
60-minute stereo recording, each in a fresh process that reports its own peak RSS, read in windows
(the default, 600 s) and whole (window larger than the recording). Target: with windows, the
60-minute recording within 1.2x of the 10-minute one; read whole, memory grows with the length.

The recordings tile the demo's long-form recording (real speech with pauses) onto two channels at
44.1 kHz, as a podcast would come; the windowed and the whole run must find the same segments.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf


def make_recording(path: Path, minutes: float, source: Path) -> None:
    """Stereo 44.1 kHz int16 WAV of `minutes`, tiling real speech, written block by block."""
    import librosa

    x, sr = sf.read(source, dtype="float32")
    x = librosa.resample(x, orig_sr=sr, target_sr=44100)
    total = int(minutes * 60 * 44100)
    with sf.SoundFile(path, "w", samplerate=44100, channels=2, subtype="PCM_16") as out:
        done = 0
        while done < total:
            block = x[: total - done]
            out.write(np.stack([block, 0.8 * block], axis=1))
            done += len(block)


def child(path: str, window: float) -> None:
    from lhotse import Recording

    from osum_data.label import audio_windows
    from osum_data.label.audio_check import check_audio, downmix

    audio_windows.WINDOW_S = window  # the same window for the check and the downmix
    from osum_data.label.longform.vad import SileroVAD

    t0 = time.perf_counter()
    cut = Recording.from_file(path).to_cut()
    cut = check_audio(cut)
    mono = downmix(cut, Path(path).parent / f"files-{window:g}", 16000)
    vad = SileroVAD(window=window)
    segments, counters = vad.segments(mono)
    print(
        json.dumps(
            {
                "minutes": round(cut.duration / 60, 1),
                "window": window,
                "segments": [[round(s.start, 2), round(s.end, 2)] for s in segments],
                "windows": counters["windows"],
                "seconds": round(time.perf_counter() - t0, 1),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
        )
    )


def run_child(path: Path, window: float) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", str(path), str(window)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--small", type=float, default=10.0, help="minutes")
    ap.add_argument("--large", type=float, default=60.0, help="minutes")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], float(args.child[1]))
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from osum_data.demo.joined import longform_recording

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = longform_recording(work / "source", n_prompts=12, seed=0) / "long_000.wav"
        rows = {}
        for minutes in (args.small, args.large):
            path = work / f"long_{minutes:g}min.wav"
            make_recording(path, minutes, source)
            for label, window in (("windows", 600.0), ("whole", 1e7)):
                rows[(minutes, label)] = run_child(path, window)
                r = rows[(minutes, label)]
                print(
                    f"{minutes:5g} min, {label:7s}: peak RSS {r['peak_rss_mb']:7.1f} MB, "
                    f"{len(r['segments'])} segments, {r['windows']} window(s), {r['seconds']} s"
                )
        for minutes in (args.small, args.large):
            a, b = rows[(minutes, "windows")]["segments"], rows[(minutes, "whole")]["segments"]
            pairs = zip(a, b, strict=False)  # the counts are printed; compare what both found
            gap = max((abs(x - y) for sa, sb in pairs for x, y in zip(sa, sb, strict=True)), default=0.0)
            print(
                f"{minutes:g} min: {len(a)} segments read in windows, {len(b)} read whole; "
                f"largest boundary difference {gap * 1000:.0f} ms"
            )
        for label in ("windows", "whole"):
            ratio = rows[(args.large, label)]["peak_rss_mb"] / rows[(args.small, label)]["peak_rss_mb"]
            note = "  (target <= 1.2)" if label == "windows" else ""
            print(f"peak RSS {args.large:g} min / {args.small:g} min, read in {label}: {ratio:.2f}x{note}")


if __name__ == "__main__":
    main()
