"""Inputs of the paralinguistic demo runs (VED, SER, SGC, SAP), built offline from Debian packages.

- `asterisk_few_input`: a few dozen of the real Asterisk prompts (one female speaker, gender known);
- `personas_input`: synthetic speakers of both genders and three age groups, each reading sentences
  in four emotions, synthesised with espeak-ng and flite (stand-ins: the labels are the persona's);
- `events_input`: real recorded laughs and coughs from hedgewars-data (no transcript: X-only clips);
- `noise_input` / `rir_input`: background noise (real music excerpts + sox noise) and synthetic room
  impulse responses for the `augment` stage.
Each is a demo input builder `(output_dir, limit) -> cuts manifest`, writing under its own folder and
importing its metadata.tsv with `prepare tsv`. What they synthesise is listed in para.yaml.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from functools import cache
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

from osum_data.demo import SOUNDS_DIR, asterisk_transcripts, write_tsv

SAMPLING_RATE = 16000


@cache
def plan() -> dict:
    with open(Path(__file__).with_name("para.yaml"), encoding="utf-8") as f:
        return yaml.safe_load(f)


def _import(folder: Path, header: list[str], rows: list[list[str]]) -> Path:
    from osum_data.corpora import prepare

    (folder / "corpus").mkdir(parents=True, exist_ok=True)
    write_tsv(folder / "corpus" / "metadata.tsv", header, rows)
    report = prepare("tsv", folder / "corpus", folder / "import")
    print(report.summary())
    return folder / "import" / "cuts.jsonl.gz"


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise FileNotFoundError(
            f"{tool} not found: install the Debian package {package} (`make demo` does it as root)"
        )
    return path


def asterisk_few_input(output: Path, limit: int | None = None, n: int = 24) -> Path:
    """The first `n` Asterisk prompts of at least four words (real speech, female, 8 kHz)."""
    texts = asterisk_transcripts()
    rows = []
    for name, text in sorted(texts.items()):
        wav = SOUNDS_DIR / f"{name}.wav"
        if len(text.split()) >= 4 and wav.exists():
            rows.append([f"asterisk_{name.replace('/', '_')}", str(wav), text, "en", "allison", "female"])
    rows = rows[: min(n, limit or n)]
    return _import(output / "asterisk_few", ["id", "audio", "text", "language", "speaker", "gender"], rows)


def synthesise(persona: dict, emotion: dict, text: str, path: Path) -> None:
    """One utterance by a persona in an emotion, as 16-bit WAV at 16 kHz."""
    raw = path.with_suffix(".raw.wav")
    if persona["engine"] == "espeak-ng":
        pitch = int(np.clip(persona["pitch"] + emotion["pitch"], 0, 99))
        speed = round(persona["speed"] * emotion["rate"])
        cmd = [_need("espeak-ng", "espeak-ng"), "-v", persona["voice"], "-p", str(pitch), "-s", str(speed)]
        subprocess.run([*cmd, "-w", str(raw), text], check=True, capture_output=True)
    elif persona["engine"] == "flite":
        f0 = round(persona["f0"] * (1 + emotion["pitch"] / 100))
        cmd = [_need("flite", "flite"), "-voice", persona["voice"], "--setf", f"int_f0_target_mean={f0}"]
        cmd += ["--setf", f"duration_stretch={1 / emotion['rate']:.3f}", "-t", text, "-o", str(raw)]
        subprocess.run(cmd, check=True, capture_output=True)
    else:
        raise ValueError(f"persona {persona['id']!r}: unknown TTS engine {persona['engine']!r}")
    import librosa

    audio, _ = librosa.load(raw, sr=SAMPLING_RATE)
    raw.unlink()
    audio = audio * 10 ** (emotion["gain_db"] / 20)
    peak = float(np.max(np.abs(audio)))
    if peak > 0.99:
        audio = audio * (0.99 / peak)
    sf.write(path, audio, SAMPLING_RATE, subtype="PCM_16")


def personas_input(output: Path, limit: int | None = None) -> Path:
    """Every persona reads every sentence of every emotion (64 utterances by default)."""
    spec = plan()
    folder = output / "personas"
    audio_dir = folder / "corpus" / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for persona in spec["personas"]:
        for emotion, sentences in spec["sentences"].items():
            for i, text in enumerate(sentences):
                cut_id = f"tts_{persona['id']}_{emotion}_{i}"
                synthesise(persona, spec["emotions"][emotion], text, audio_dir / f"{cut_id}.wav")
                rows.append(
                    [
                        cut_id,
                        f"audio/{cut_id}.wav",
                        text,
                        "en",
                        persona["id"],
                        persona["gender"],
                        persona["age"],
                        emotion,
                        f"tts:{persona['engine']}",  # the labels are the persona's, not heard
                    ]
                )
    rows = rows[:limit] if limit else rows
    header = ["id", "audio", "text", "language", "speaker", "gender", "age", "emotion", "label_source"]
    return _import(folder, header, rows)


def events_input(output: Path, limit: int | None = None) -> Path:
    """Real laughs and coughs (hedgewars-data voice packs), one clip per distinct file."""
    spec = plan()["events"]
    root = Path(spec["root"])
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root} not found: install the Debian package {spec['package']} "
            "(`apt-get install --no-install-recommends hedgewars-data`; `make demo` does it as root)"
        )
    rows, seen = [], set()
    for pack in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in spec["skip_packs"]):
        for name, event in spec["files"].items():
            path = pack / name
            if not path.is_file():
                continue
            digest = hashlib.sha1(path.read_bytes()).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            rows.append([f"hedgewars_{pack.name}_{path.stem}", str(path), "", event])
    rows = rows[:limit] if limit else rows
    return _import(output / "events", ["id", "audio", "text", "events"], rows)


def noise_input(output: Path, limit: int | None = None) -> Path:
    """Excerpts of real recorded music/ambience and sox-made pink and brown noise, 16 kHz FLAC."""
    spec = plan()["noise"]
    sox = _need("sox", "sox")
    audio_dir = output / "noise" / "corpus" / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for item in spec["excerpts"]:
        src = Path(item["file"])
        if not src.is_file():
            raise FileNotFoundError(f"{src} not found: install the Debian package hedgewars-data")
        out = audio_dir / f"{src.stem.lower()}.flac"
        trim = ["trim", str(item["start"]), str(item["seconds"])]
        subprocess.run([sox, str(src), "-r", str(SAMPLING_RATE), "-c", "1", str(out), *trim], check=True)
        rows.append([f"noise_{out.stem}", f"audio/{out.name}", ""])
    for kind, seconds in spec["synthetic"].items():
        out = audio_dir / f"{kind}.flac"
        synth = ["synth", str(seconds), kind, "vol", "0.3"]
        subprocess.run([sox, "-n", "-r", str(SAMPLING_RATE), "-c", "1", str(out), *synth], check=True)
        rows.append([f"noise_{kind}", f"audio/{out.name}", ""])
    return _import(output / "noise", ["id", "audio", "text"], rows)


def synthetic_rir(rt60: float, seconds: float, seed: int) -> np.ndarray:
    """Exponentially decaying Gaussian noise (60 dB down after rt60) after a unit direct path."""
    n = round(seconds * SAMPLING_RATE)
    t = np.arange(n) / SAMPLING_RATE
    tail = np.random.default_rng(seed).standard_normal(n) * np.exp(-6.9078 * t / rt60) * 0.3
    tail[0] = 1.0
    return (tail / np.max(np.abs(tail)) * 0.9).astype(np.float32)


def rir_input(output: Path, limit: int | None = None) -> Path:
    spec = plan()["rirs"]
    audio_dir = output / "rirs" / "corpus" / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, rt60 in enumerate(spec["rt60_s"]):
        name = f"rir_rt60_{int(rt60 * 1000)}ms"
        sf.write(
            audio_dir / f"{name}.wav",
            synthetic_rir(rt60, spec["seconds"], i),
            SAMPLING_RATE,
            subtype="PCM_16",
        )
        rows.append([name, f"audio/{name}.wav", ""])
    return _import(output / "rirs", ["id", "audio", "text"], rows)
