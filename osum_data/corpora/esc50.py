"""ESC-50 (no lhotse recipe): 2,000 five-second clips in 50 classes, 6 of them human vocal sounds.

Layout: meta/esc50.csv (filename, fold, target, category, esc10, src_file, take) and audio/<filename>.
corpus_maps.yaml maps the vocal categories (crying_baby, sneezing, coughing, laughing -> their
classes; breathing, snoring -> other) and lists the other 44 with `drop`, so those rows are counted as
rejected with the category named instead of vanishing. The fold goes to custom.fold (ESC-50 is
evaluated by 5-fold cross-validation), the category to custom.esc50_category.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from pathlib import Path

from osum_data.corpora.report import ImportReport
from osum_data.corpora.rows import Row, field_count_error, import_rows, relative
from osum_data.corpora.text import read_text
from osum_data.errors import UsageError

CORPUS = "esc50"
REQUIRED = ("filename", "fold", "category")


def prepare_esc50(corpus_dir: Path, out_dir: Path) -> ImportReport:
    root = Path(os.path.abspath(corpus_dir))
    for base in (root, root / "ESC-50-master", root / "ESC-50"):
        if (base / "meta" / "esc50.csv").is_file():
            break
    else:
        raise FileNotFoundError(f"no meta/esc50.csv under {corpus_dir}")
    rows = scan(root, base)
    return import_rows(CORPUS, Path(out_dir), [(None, rows)], expected_labels=("events",))


def scan(root: Path, base: Path) -> Iterator[Row]:
    table = base / "meta" / "esc50.csv"
    with io.StringIO(read_text(table), newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise UsageError(f"{table}: missing column(s) {', '.join(missing)}")
        for record in reader:
            source = f"{relative(table, root)}:{reader.line_num}"
            problem = field_count_error(record, reader.line_num)
            if problem is not None:
                row_id = Path((record.get("filename") or "").strip()).stem or f"line{reader.line_num}"
                yield Row(id=row_id, source=source, audio=None, problem=problem)
                continue
            filename = record["filename"].strip()
            category = record["category"].strip()
            yield Row(
                id=Path(filename).stem,
                source=source,
                audio=base / "audio" / filename,
                events=[category],
                custom={
                    "fold": int(record["fold"]) if record["fold"].strip().isdigit() else record["fold"],
                    "esc50_category": category,
                    "esc10": (record.get("esc10") or "").strip() == "True",
                },
            )
