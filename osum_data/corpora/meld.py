"""MELD (no lhotse recipe): emotion of Friends utterances; audio comes out of the MELD.Raw mp4 clips.

Layout: {train,dev,test}_sent_emo.csv (comma-separated, quoted; columns Sr No., Utterance, Speaker,
Emotion, Sentiment, Dialogue_ID, Utterance_ID, Season, Episode, StartTime, EndTime) and one folder of
`dia{D}_utt{U}.mp4` clips per split (train_splits/, dev_splits_complete/,
output_repeated_splits_test/; conventions.yaml), found anywhere under CORPUS_DIR. Quirks handled:
- the utterances carry Windows-1252 punctuation stored as C1 control characters (U+0092 for a
  right quote, U+0085 for an ellipsis): we translate them back to the characters meant;
- clips are video: their audio is demuxed to FLAC once (media.py says why); a clip that does not
  decode (dev's dia125_utt3 is a known broken one) is rejected with the decoder's message;
- test folders also hold `final_videos_test*.mp4` duplicates, which no CSV row names: ignored.
Cut ids are `<split>_dia<D>_utt<U>` (dialogue ids restart in each split).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from pathlib import Path

from osum_data.corpora.rejects import MALFORMED_LINE
from osum_data.corpora.report import ImportReport
from osum_data.corpora.rows import Row, conventions, field_count_error, import_rows, relative
from osum_data.errors import UsageError
from osum_data.rejects import Reject

CORPUS = "meld"
REQUIRED = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")
_C1 = {c: bytes([c]).decode("cp1252", errors="ignore") or None for c in range(0x80, 0xA0)}


def prepare_meld(corpus_dir: Path, out_dir: Path) -> ImportReport:
    """Import every split whose *_sent_emo.csv is found under CORPUS_DIR."""
    root = Path(os.path.abspath(corpus_dir))
    splits = conventions(CORPUS)["splits"]
    found = {split: _find(root, spec["csv"], file=True) for split, spec in splits.items()}
    if not any(found.values()):
        names = ", ".join(spec["csv"] for spec in splits.values())
        raise FileNotFoundError(f"no MELD label table ({names}) under {corpus_dir}")
    parts = (
        (split, scan_split(root, split, table, _find(root, splits[split]["clips"], file=False)))
        for split, table in found.items()
        if table is not None
    )
    return import_rows(CORPUS, Path(out_dir), parts, expected_labels=("emotion",))


def _find(root: Path, name: str, file: bool) -> Path | None:
    matches = sorted(p for p in root.rglob(name) if (p.is_file() if file else p.is_dir()))
    return matches[0] if matches else None


def fix_text(text: str) -> str:
    """Windows-1252 characters that ended up as C1 controls (he\\x92s -> he’s)."""
    return text.translate(_C1).strip()


def read_table(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:  # some copies were re-saved as Windows-1252
        return raw.decode("cp1252", errors="replace")


def scan_split(root: Path, split: str, table: Path, clips: Path | None) -> Iterator[Row]:
    reader = csv.DictReader(io.StringIO(read_table(table), newline=""))
    missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise UsageError(f"{table}: missing column(s) {', '.join(missing)}; header: {reader.fieldnames}")
    clip_dir = clips or table.parent / conventions(CORPUS)["splits"][split]["clips"]
    for record in reader:
        source = f"{relative(table, root)}:{reader.line_num}"
        problem = field_count_error(record, reader.line_num)
        if problem is not None:
            yield Row(id=f"{split}_line{reader.line_num}", source=source, audio=None, problem=problem)
            continue
        dia, utt = (record.get("Dialogue_ID") or "").strip(), (record.get("Utterance_ID") or "").strip()
        if not (dia.isdigit() and utt.isdigit()):
            problem = Reject(MALFORMED_LINE, f"Dialogue_ID {dia!r} / Utterance_ID {utt!r} are not numbers")
            yield Row(id=f"{split}_line{reader.line_num}", source=source, audio=None, problem=problem)
            continue
        name = f"dia{int(dia)}_utt{int(utt)}"
        yield Row(
            id=f"{split}_{name}",
            source=source,
            audio=clip_dir / f"{name}.mp4",
            text=fix_text(record.get("Utterance") or ""),
            speaker=(record.get("Speaker") or "").strip() or None,
            language="en",
            emotion=record.get("Emotion"),
            custom={
                "subset": split,
                "sentiment": (record.get("Sentiment") or "").strip(),
                "episode": _episode(record),
                "episode_span": [record.get("StartTime"), record.get("EndTime")],
            },
        )


def _episode(record: dict[str, str]) -> str | None:
    season, episode = (record.get("Season") or "").strip(), (record.get("Episode") or "").strip()
    return f"S{int(season):02d}E{int(episode):02d}" if season.isdigit() and episode.isdigit() else None
