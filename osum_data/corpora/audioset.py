"""AudioSet / FSD50K-style clip label tables (no lhotse recipe): multi-label clips -> vocal events.

CORPUS_DIR is searched for label tables in either of two formats (every other CSV is ignored; none
found is an error):

1. FSD50K ground truth (FSD50K.ground_truth/dev.csv, eval.csv): columns `fname`, `labels` (a quoted,
   comma-separated list of class names such as "Laughter,Chuckle_and_chortle,Human_voice"), optional
   `mids` and `split`. Audio: <fname>.wav in FSD50K.<table>_audio/, else anywhere under CORPUS_DIR.
2. AudioSet segment lists (balanced_train_segments.csv, eval_segments.csv, ...): `#` comment lines,
   then `YTID, start_seconds, end_seconds, "positive_labels"` with labels as ontology ids (/m/01j3sz),
   named through class_labels_indices.csv (index, mid, display_name) found under CORPUS_DIR. Audio: a
   file under CORPUS_DIR whose name (without extension) is the YTID, Y<YTID>, <YTID>_<start> or
   <YTID>_<start>_<end> (the names common downloaders write), holding just that segment.

Names are compared as AudioSet display names (FSD50K's "Crying_and_sobbing" reads as
"crying, sobbing"); corpus_maps.yaml's `audioset` table maps the vocal classes and drops the rest with
`*`, so a clip keeps its vocal events (all raw labels in custom.events_raw) and a clip with none is
rejected naming its labels. One part per label table, named after it (dev, eval, balanced_train...).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from pathlib import Path

from osum_data.corpora.rejects import MALFORMED_LINE, UNKNOWN_LABEL
from osum_data.corpora.report import ImportReport
from osum_data.corpora.rows import Row, field_count_error, import_rows, relative
from osum_data.errors import UsageError
from osum_data.rejects import Reject

CORPUS = "audioset"
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
ONTOLOGY = "class_labels_indices.csv"


def prepare_audioset(corpus_dir: Path, out_dir: Path) -> ImportReport:
    root = Path(os.path.abspath(corpus_dir))
    tables = [(p, fmt) for p in sorted(root.rglob("*.csv")) if (fmt := table_format(p))]
    if not tables:
        raise FileNotFoundError(
            f"no FSD50K (fname,labels) or AudioSet segment (YTID, start_seconds, ...) CSV under {corpus_dir}"
        )
    audio = AudioIndex(root)
    ontology = read_ontology(root) if any(fmt == "audioset" for _, fmt in tables) else {}
    parts = []
    for table, fmt in tables:
        rows = (
            scan_fsd50k(root, table, audio)
            if fmt == "fsd50k"
            else scan_segments(root, table, audio, ontology)
        )
        parts.append((table.stem, rows))
    if len({name for name, _ in parts}) != len(parts):
        raise UsageError(f"two label tables share a name under {corpus_dir}: {[t.name for t, _ in tables]}")
    return import_rows(CORPUS, Path(out_dir), parts, expected_labels=("events",))


def table_format(path: Path) -> str | None:
    """'fsd50k', 'audioset' or None from the first lines of a CSV."""
    if path.name == ONTOLOGY:
        return None
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        head = [f.readline() for _ in range(5)]
    columns = [c.strip().lower() for c in head[0].split(",")]
    if "fname" in columns and "labels" in columns:
        return "fsd50k"
    if any(line.startswith("#") and "ytid" in line.lower() and "positive_labels" in line for line in head):
        return "audioset"
    return None


def class_name(label: str) -> str:
    """FSD50K and AudioSet spellings of a class as one key: 'Chuckle_and_chortle' -> 'chuckle, chortle'."""
    return label.strip().replace("_and_", ", ").replace("_", " ").casefold()


class AudioIndex:
    """File stem -> audio path under the corpus, built on first use (one directory walk)."""

    def __init__(self, root: Path):
        self.root = root
        self._by_stem: dict[str, Path] | None = None

    def find(self, *stems: str, preferred: Path | None = None) -> Path | None:
        if preferred is not None:
            for suffix in AUDIO_SUFFIXES:
                if (candidate := preferred / f"{stems[0]}{suffix}").is_file():
                    return candidate
        if self._by_stem is None:
            self._by_stem = {}
            for dirpath, _, names in sorted(os.walk(self.root)):
                for name in sorted(names):
                    if name.lower().endswith(AUDIO_SUFFIXES):
                        self._by_stem.setdefault(Path(name).stem, Path(dirpath) / name)
        return next((self._by_stem[s] for s in stems if s in self._by_stem), None)


def read_ontology(root: Path) -> dict[str, str]:
    found = sorted(root.rglob(ONTOLOGY))
    if not found:
        raise FileNotFoundError(f"AudioSet segment lists need {ONTOLOGY} (mid -> display_name) under {root}")
    with open(found[0], encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        out = {}
        for row in reader:
            bad = field_count_error(row, reader.line_num)
            if bad is not None or row.get("mid") is None or row.get("display_name") is None:
                why = bad.detail if bad else "no mid or display_name column"
                raise UsageError(f"{found[0]}: {why}; fix the ontology table")
            out[row["mid"].strip()] = row["display_name"].strip()
        return out


def scan_fsd50k(root: Path, table: Path, audio: AudioIndex) -> Iterator[Row]:
    audio_dir = table.parent.parent / f"FSD50K.{table.stem}_audio"
    with open(table, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        for record in reader:
            source = f"{relative(table, root)}:{reader.line_num}"
            problem = field_count_error(record, reader.line_num)
            if problem is not None:
                row_id = f"{table.stem}_{(record.get('fname') or '').strip() or f'line{reader.line_num}'}"
                yield Row(id=row_id, source=source, audio=None, problem=problem)
                continue
            fname = (record.get("fname") or "").strip()
            labels = [v for v in (record.get("labels") or "").split(",") if v.strip()]
            path = audio.find(fname, preferred=audio_dir) if fname else None
            yield Row(
                id=f"{table.stem}_{fname}",
                source=source,
                audio=path or audio_dir / f"{fname}.wav",
                events=[class_name(v) for v in labels],
                custom={"subset": (record.get("split") or table.stem).strip(), "labels_raw": labels},
            )


def scan_segments(root: Path, table: Path, audio: AudioIndex, ontology: dict[str, str]) -> Iterator[Row]:
    lines = table.read_text(encoding="utf-8", errors="replace").splitlines()
    for lineno, fields in enumerate(
        csv.reader(io.StringIO("\n".join(lines)), skipinitialspace=True), start=1
    ):
        if not fields or fields[0].lstrip().startswith("#"):
            continue
        source = f"{relative(table, root)}:{lineno}"
        if len(fields) != 4:
            problem = Reject(MALFORMED_LINE, f"expected YTID, start, end, labels; got {fields!r}")
            yield Row(id=f"{table.stem}:{lineno}", source=source, audio=None, problem=problem)
            continue
        ytid, start, end, mids = (f.strip() for f in fields)
        mids_list = [m.strip() for m in mids.split(",") if m.strip()]
        unknown = [m for m in mids_list if m not in ontology]
        problem = None
        if unknown:
            problem = Reject(UNKNOWN_LABEL, f"label id(s) {', '.join(unknown)} not in {ONTOLOGY}")
        stems = (
            ytid,
            f"Y{ytid}",
            f"{ytid}_{start}",
            f"{ytid}_{_int(start)}",
            f"{ytid}_{start}_{end}",
            f"Y{ytid}_{start}_{end}",
        )
        path = audio.find(*stems)
        yield Row(
            id=f"{ytid}_{start}",
            source=source,
            audio=path or root / f"{ytid}.wav",
            events=[class_name(ontology[m]) for m in mids_list if m in ontology],
            custom={"subset": table.stem, "segment": [start, end], "labels_raw": mids_list},
            problem=problem,
        )


def _int(seconds: str) -> str:
    try:
        return str(int(float(seconds)))
    except ValueError:
        return seconds
