"""Nonspeech7k (no lhotse recipe): ~7k clips of breathing, coughing, crying, laughing, screaming,
sneezing and yawning.

Layout (Zenodo record 6967442): train/ and test/ folders of wav clips and one metadata CSV per split
("metadata of train set.csv", "metadata of test set.csv"; conventions.yaml). The CSV's header spelling
is not fixed, so columns are found by name ignoring case, spaces and underscores: a file column
(Filename / File name / fname) and a class column (Classname / Class name / class). A file name
without extension is looked up as <name>.wav. Class names are mapped in corpus_maps.yaml
(breath, yawn -> other).
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

from osum_data.corpora.report import ImportReport
from osum_data.corpora.rows import Row, conventions, field_count_error, import_rows, relative
from osum_data.corpora.text import read_text
from osum_data.errors import UsageError

CORPUS = "nonspeech7k"
FILE_COLUMNS = ("filename", "fname", "file")
CLASS_COLUMNS = ("classname", "class", "label", "category")


def prepare_nonspeech7k(corpus_dir: Path, out_dir: Path) -> ImportReport:
    root = Path(os.path.abspath(corpus_dir))
    splits = conventions(CORPUS)["splits"]
    tables = {split: _find(root, spec["csv"]) for split, spec in splits.items()}
    if not any(tables.values()):
        names = ", ".join(repr(spec["csv"]) for spec in splits.values())
        raise FileNotFoundError(f"no Nonspeech7k metadata ({names}) under {corpus_dir}")
    parts = [
        (split, scan(root, split, table, table.parent / splits[split]["clips"]))
        for split, table in tables.items()
        if table is not None
    ]
    return import_rows(CORPUS, Path(out_dir), parts, expected_labels=("events",))


def _find(root: Path, name: str) -> Path | None:
    matches = sorted(root.rglob(name))
    return matches[0] if matches else None


def _key(column: str) -> str:
    return re.sub(r"[\s_]+", "", column).casefold()


def scan(root: Path, split: str, table: Path, clips: Path) -> Iterator[Row]:
    with io.StringIO(read_text(table), newline="") as f:
        reader = csv.DictReader(f)
        columns = {_key(c): c for c in reader.fieldnames or []}
        file_col = next((columns[k] for k in FILE_COLUMNS if k in columns), None)
        class_col = next((columns[k] for k in CLASS_COLUMNS if k in columns), None)
        if file_col is None or class_col is None:
            raise UsageError(
                f"{table}: need a file name and a class name column; header: {reader.fieldnames}"
            )
        for record in reader:
            source = f"{relative(table, root)}:{reader.line_num}"
            problem = field_count_error(record, reader.line_num)
            if problem is not None:
                name = Path((record.get(file_col) or "").strip()).stem or f"line{reader.line_num}"
                yield Row(id=f"{split}_{name}", source=source, audio=None, problem=problem)
                continue
            name = (record[file_col] or "").strip()
            filename = name if Path(name).suffix else f"{name}.wav"
            yield Row(
                id=f"{split}_{Path(filename).stem}",
                source=source,
                audio=clips / filename,
                events=[(record[class_col] or "").strip()],
                custom={"subset": split},
            )
