"""ESD, the Emotional Speech Dataset (no lhotse recipe): 10 Mandarin + 10 English speakers, 5 emotions.

Layout ("Emotion Speech Dataset/"): <spk>/<Emotion>/<split>/<spk>_<n>.wav with emotion folders Angry,
Happy, Neutral, Sad, Surprise and splits train/evaluation/test (some copies are flat: no split
folder), a transcript <spk>/<spk>.txt of `<utt><TAB><text><TAB><emotion>` lines, and ReadMe.txt
listing `0001: Chinese Female`. Quirks handled:
- transcript encodings differ per speaker (UTF-8, UTF-16 with BOM, GB2312, Latin-1): decoded by
  trying them in that order, by the speaker's language;
- the third column names the emotion in Chinese for the Mandarin speakers (中立, 开心, ...): it must
  agree with the folder (else `label_conflict`); the folder is the label;
- a few lines lack the tab-separated emotion or text: such utterances are rejected, naming the line.
Parts are the split folders (train/evaluation/test), or one part for a flat copy.
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Iterator
from pathlib import Path

from osum_data.corpora.labels import lookup
from osum_data.corpora.rejects import LABEL_CONFLICT, MALFORMED_LINE, NO_TRANSCRIPT
from osum_data.corpora.report import ImportReport
from osum_data.corpora.rows import Row, conventions, import_rows, relative
from osum_data.errors import UsageError
from osum_data.rejects import Reject

CORPUS = "esd"
_SPEAKER = re.compile(r"\d{4}")
_README_LINE = re.compile(r"^\s*(\d{4})\s*:\s*(\w+)\s+(\w+)\s*$")
_LANGUAGES = {"chinese": "zh", "mandarin": "zh", "english": "en"}
_ENCODINGS = {"zh": ("utf-8", "gb18030"), "en": ("utf-8", "cp1252", "latin-1")}


def prepare_esd(corpus_dir: Path, out_dir: Path) -> ImportReport:
    root = locate(Path(os.path.abspath(corpus_dir)))
    speakers = sorted(d for d in root.iterdir() if d.is_dir() and _SPEAKER.fullmatch(d.name))
    readme = read_readme(root)
    splits = conventions(CORPUS)["split_folders"]
    flat = not any((s / e / p).is_dir() for s in speakers for e in _emotion_dirs(s) for p in splits)
    if flat:
        parts = [(None, _rows(root, speakers, readme, None))]
    else:
        parts = [(split, _rows(root, speakers, readme, split)) for split in splits]
    return import_rows(CORPUS, Path(out_dir), parts, expected_labels=("gender", "emotion"))


def locate(corpus_dir: Path) -> Path:
    for root in (corpus_dir, corpus_dir / "Emotion Speech Dataset", corpus_dir / "ESD"):
        if root.is_dir() and any(_SPEAKER.fullmatch(d.name) for d in root.iterdir() if d.is_dir()):
            return root
    raise FileNotFoundError(f"no ESD speaker folder (0001 ... 0020) in {corpus_dir}")


def read_readme(root: Path) -> dict[str, tuple[str, str]]:
    """Speaker -> (language code, gender word) from ReadMe.txt lines `0001: Chinese Female`."""
    for name in ("ReadMe.txt", "README.txt", "readme.txt"):
        if (root / name).is_file():
            text = (root / name).read_text(encoding="utf-8", errors="replace")
            return {
                m[1]: (_LANGUAGES.get(m[2].lower(), m[2].lower()), m[3])
                for line in text.splitlines()
                if (m := _README_LINE.match(line))
            }
    return {}


def language_of(speaker: str, readme: dict[str, tuple[str, str]]) -> str:
    if speaker in readme:
        return readme[speaker][0]
    number = int(speaker)
    for language, (low, high) in conventions(CORPUS)["language_by_speaker"].items():
        if low <= number <= high:
            return language
    return "en"


def _emotion_dirs(speaker: Path) -> list[Path]:
    return [speaker / e for e in conventions(CORPUS)["emotion_folders"] if (speaker / e).is_dir()]


def _rows(root: Path, speakers: list[Path], readme: dict, split: str | None) -> Iterator[Row]:
    for speaker in speakers:
        spk = speaker.name
        language = language_of(spk, readme)
        transcript = speaker / f"{spk}.txt"
        lines = read_transcript(transcript, language)
        for folder in _emotion_dirs(speaker):
            wav_dir = folder if split is None else folder / split
            for wav in sorted(wav_dir.glob("*.wav")):
                yield _row(root, wav, spk, language, readme, folder.name, split, transcript, lines)


def _row(root, wav, spk, language, readme, emotion, split, transcript, lines) -> Row:
    uid = wav.stem
    where = relative(transcript, root)
    problem = None
    text = None
    entry = lines.get(uid)
    if entry is None:
        problem = Reject(NO_TRANSCRIPT, f"{relative(wav, root)} has no line in {where}")
    else:
        lineno, fields = entry
        where = f"{where}:{lineno}"
        if len(fields) != 3 or not fields[1].strip():
            problem = Reject(MALFORMED_LINE, f"expected '<utt> TAB <text> TAB <emotion>', got {fields!r}")
        else:
            text = fields[1].strip()
            try:
                problem = _conflict(emotion, fields[2].strip())
            except Reject as err:  # an emotion word no corpus map knows
                problem = Reject(err.code, f"{err.detail} at {where}")
    return Row(
        id=uid,
        source=where,
        audio=wav,
        text=text,
        speaker=spk,
        language=language,
        gender=readme.get(spk, (None, None))[1],
        emotion=emotion,
        custom={"subset": split},
        problem=problem,
    )


def _conflict(folder: str, column: str) -> Reject | None:
    """The transcript's emotion must name the same class as the folder the wav sits in."""
    ours, theirs = lookup("emotion", folder, CORPUS), lookup("emotion", column, CORPUS, "the transcript")
    if ours != theirs:
        return Reject(LABEL_CONFLICT, f"folder {folder} but the transcript says {column!r}")
    return None


def read_transcript(path: Path, language: str) -> dict[str, tuple[int, list[str]]]:
    """Utterance id -> (line number, tab-separated fields); {} if the file is missing."""
    if not path.is_file():
        return {}
    text = decode(path.read_bytes(), language, path)
    entries = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        fields = re.split(r"\t+", line)
        entries[fields[0].strip()] = (lineno, fields)
    return entries


def decode(raw: bytes, language: str, path: Path) -> str:
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return raw.decode("utf-16")
    for encoding in _ENCODINGS.get(language, ("utf-8",)):
        try:
            return raw.decode(encoding).lstrip("\ufeff")
        except UnicodeDecodeError:
            continue
    raise UsageError(f"{path}: not decodable as any of {', '.join(_ENCODINGS.get(language, ()))}")
