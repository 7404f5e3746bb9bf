"""Real recorded speech with known boundaries: demo prompts joined with silences of known length.

The Asterisk prompts are studio recordings with digital silence around each word, so where speech
starts and ends in a prompt can be read off its energy (first and last 5 ms frame above -50 dBFS,
about 38 dB under the speech peaks). Joining trimmed prompts with silences of chosen lengths (plus
faint noise at -70 dBFS, so nothing is digitally silent) gives recordings whose word boundaries
and speech segments are known to the sample: the test set of the aligner fidelity benchmark and of
the VAD tests, and the demo's long-form recording.
"""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from osum_data.demo import SOUNDS_DIR, asterisk_transcripts, keep_or_replace, part_path, write_tsv

# Single-word prompts (digits, letters) used for word-level test sets.
WORD_PROMPTS = [f"digits/{n}" for n in range(0, 21)] + [f"letters/{c}" for c in "abcdefghijklmnopqrstuvwxyz"]


@dataclass(frozen=True)
class Piece:
    """One prompt inside a joined recording, in seconds from its start."""

    name: str
    text: str
    start: float
    end: float


def speech_extent(
    audio: np.ndarray, sr: int, threshold_db: float = -50.0, frame_s: float = 0.005
) -> tuple[int, int]:
    """(first, last+1) sample of the frames whose RMS exceeds `threshold_db` dBFS."""
    frame = max(1, int(sr * frame_s))
    n = len(audio) // frame
    rms = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame) ** 2, axis=1))
    loud = np.flatnonzero(20 * np.log10(rms + 1e-12) > threshold_db)
    if not len(loud):
        raise ValueError("no frame above the threshold")
    return int(loud[0] * frame), int((loud[-1] + 1) * frame)


def _has_speech(name: str) -> bool:
    """False for prompts that are tones or too quiet to find speech in."""
    audio, rate = sf.read(SOUNDS_DIR / f"{name}.wav", dtype="float32")
    try:
        speech_extent(audio, rate)
    except ValueError:
        return False
    return True


def join_prompts(
    names: list[str],
    gaps: list[float],
    out_wav: Path,
    noise_dbfs: float = -70.0,
    seed: int = 0,
    texts: dict[str, str] | None = None,
) -> list[Piece]:
    """Write `out_wav`: gaps[0] s of silence, prompt 1 (trimmed to its speech), gaps[1] s, prompt 2,
    ..., gaps[-1] s (len(gaps) == len(names) + 1). Returns where each prompt's speech lies."""
    if len(gaps) != len(names) + 1:
        raise ValueError("need one gap more than prompts (leading and trailing silence)")
    texts = texts or asterisk_transcripts()
    parts, pieces, pos, sr = [], [], 0, None
    for name, gap in zip(names, gaps, strict=False):
        audio, rate = sf.read(SOUNDS_DIR / f"{name}.wav", dtype="float32")
        sr = sr or rate
        if rate != sr:
            raise ValueError(f"{name}: {rate} Hz, others {sr} Hz")
        a, b = speech_extent(audio, rate)
        silence = int(round(gap * sr))
        parts += [np.zeros(silence, dtype=np.float32), audio[a:b]]
        pos += silence
        pieces.append(Piece(name, texts[name], pos / sr, (pos + b - a) / sr))
        pos += b - a
    parts.append(np.zeros(int(round(gaps[-1] * sr)), dtype=np.float32))
    signal = np.concatenate(parts)
    signal += np.random.default_rng(seed).normal(0, 10 ** (noise_dbfs / 20), len(signal)).astype(np.float32)
    out_wav.parent.mkdir(parents=True, exist_ok=True)
    sf.write(part_path(out_wav), signal, sr, subtype="PCM_16")
    keep_or_replace(part_path(out_wav), out_wav)  # seeded: a rebuild keeps the file and its mtime
    return pieces


def word_test_set(out_dir: Path, n_utterances: int = 20, words: int = 5, seed: int = 0) -> Path:
    """Utterances of `words` single-word prompts with random pauses (0.15-0.6 s): a `prepare tsv`
    corpus (metadata.tsv) plus `reference.json` (utterance id -> word spans). Returns the folder."""
    rng = random.Random(seed)
    texts = asterisk_transcripts()
    rows, reference = [], {}
    for u in range(n_utterances):
        names = [rng.choice(WORD_PROMPTS) for _ in range(words)]
        gaps = [round(rng.uniform(0.15, 0.6), 3) for _ in range(words + 1)]
        utt = f"joined_{u:03d}"
        pieces = join_prompts(
            names, gaps, out_dir / "audio" / f"{utt}.wav", seed=seed * 1000 + u, texts=texts
        )
        rows.append([utt, f"audio/{utt}.wav", " ".join(p.text for p in pieces), "en", "allison", "female"])
        reference[utt] = [asdict(p) for p in pieces]
    write_tsv(out_dir / "metadata.tsv", ["id", "audio", "text", "language", "speaker", "gender"], rows)
    (out_dir / "reference.json").write_text(json.dumps(reference, indent=1))
    return out_dir


def longform_recording(out_dir: Path, n_prompts: int = 12, seed: int = 0) -> Path:
    """One long recording of sentence prompts separated by 0.8-2 s pauses (`audio/long_000.wav`) with
    its true speech segments in `reference.stm` and `reference.json`. Returns the audio folder."""
    rng = random.Random(seed)
    texts = asterisk_transcripts()
    sentences = sorted(
        k
        for k, v in texts.items()
        if len(v.split()) >= 3 and "[" not in v and (SOUNDS_DIR / f"{k}.wav").exists()
    )
    rng.shuffle(sentences)
    names = list(itertools.islice((k for k in sentences if _has_speech(k)), n_prompts))
    gaps = [round(rng.uniform(0.8, 2.0), 3) for _ in range(n_prompts + 1)]
    audio_dir = out_dir / "audio"
    pieces = join_prompts(names, gaps, audio_dir / "long_000.wav", seed=seed, texts=texts)
    (out_dir / "reference.json").write_text(json.dumps([asdict(p) for p in pieces], indent=1))
    with open(out_dir / "reference.stm", "w", encoding="utf-8") as f:
        for p in pieces:
            f.write(f"long_000 1 allison {p.start:.3f} {p.end:.3f} <o,f0,female> {p.text}\n")
    return audio_dir


def prompt_keys(name: str) -> list[str]:
    """The lineage keys of a demo prompt (osum_data.mix.lineage): the cut id `build_asterisk_corpus`
    and the paralinguistic inputs give it, and its audio file."""
    return [f"id:asterisk_{name.replace('/', '_')}", f"src:{SOUNDS_DIR / f'{name}.wav'}"]


def record_joined_from(manifest: Path, reference: Path) -> None:
    """Write into the imported long cut (`custom.joined_from`) where each prompt lies and its lineage
    keys: the long recording is the same speech as those prompts, which other demo runs use as
    utterances, and the mix must keep both on one side of the train / dev-test line."""
    from osum_data.manifest_io import read_jsonl, write_jsonl

    pieces = [
        {"start": p["start"], "end": p["end"], "lineage": prompt_keys(p["name"])}
        for p in json.loads(reference.read_text())
    ]
    rows = list(read_jsonl(manifest))
    for d in rows:
        d["custom"] = {**(d.get("custom") or {}), "joined_from": pieces}
    write_jsonl(manifest, rows)


def longform_input(output: Path, limit: int | None = None) -> Path:
    """Demo input builder: the joined long recording imported with `prepare longform`, with the
    prompts it was joined from recorded in the cut (`record_joined_from`)."""
    from osum_data.corpora import prepare

    base = output / "longform_input"
    audio_dir = longform_recording(base, n_prompts=min(limit or 12, 12))
    report = prepare("longform", audio_dir, base / "import")
    print(report.summary())
    record_joined_from(base / "import" / "cuts.jsonl.gz", base / "reference.json")
    return base / "import" / "cuts.jsonl.gz"
