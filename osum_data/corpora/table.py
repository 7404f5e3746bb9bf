"""Reading a metadata table (TSV or CSV) so that every data row keeps its row number.

pandas normally drops or pads malformed rows; we need each one reported with the number a user
sees (line number minus 1). Three settings make that possible: `skip_blank_lines=False` keeps the
row index aligned with the line count, an `on_bad_lines` callable (python engine) swaps a row with
too many fields for a marker pointing at the original fields, and a row with too few fields shows
up as NaN cells (with `keep_default_na=False` a real empty cell is "" and never NaN).

Both TSV and CSV use the standard csv quoting (a field starting with `"` is quoted, `""` inside
is one quote) because that is what Python's csv.writer and pandas' to_csv write for a transcript
containing a quote; the demo corpus builder produces such rows. A quoted field may span lines, so
strictly the row number counts records; it equals line number minus 1 for one-line records.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

_OVERLONG = "\x00osum-overlong-row:"


@dataclass(frozen=True)
class TableRow:
    number: int  # 1-based data row number, header excluded
    values: dict[str, str]  # lower-cased column name -> cell ("" where the row is short)
    field_error: str | None = None  # set when the row's field count differs from the header's


def find_metadata(corpus_dir: Path) -> Path:
    for name in ("metadata.tsv", "metadata.csv"):
        if (corpus_dir / name).is_file():
            return corpus_dir / name
    raise FileNotFoundError(f"no metadata.tsv or metadata.csv in {corpus_dir}")


def read_table(path: Path, required: tuple[str, ...]) -> list[TableRow]:
    """Rows of `path` in file order, blank lines skipped; ValueError if a required column is missing."""
    is_tsv = path.suffix.lower() == ".tsv"
    overlong: list[list[str]] = []

    def keep_overlong(fields: list[str]) -> list[str]:
        overlong.append(fields)
        return [f"{_OVERLONG}{len(overlong) - 1}"]

    frame = pd.read_csv(
        path,
        sep="\t" if is_tsv else ",",
        quoting=csv.QUOTE_MINIMAL,
        dtype=str,
        keep_default_na=False,
        skip_blank_lines=False,
        engine="python",
        on_bad_lines=keep_overlong,
        encoding="utf-8-sig",
    )
    columns = [str(c).strip().lower() for c in frame.columns]
    # pandas renames a repeated header "id" to "id.1"; a case-only repeat survives as is.
    duplicated = sorted(
        {c for c in columns if columns.count(c) > 1}
        | {m[1] for c in columns if (m := re.fullmatch(r"(.+)\.\d+", c)) and m[1] in columns}
    )
    if duplicated:
        raise ValueError(f"{path}: duplicate column(s) {', '.join(duplicated)}")
    missing = [c for c in required if c not in columns]
    if missing:
        raise ValueError(
            f"{path}: missing required column(s) {', '.join(missing)}; header has {', '.join(columns)}"
        )

    rows = []
    for index, cells in enumerate(frame.itertuples(index=False, name=None)):
        present = [c for c in cells if isinstance(c, str)]
        if not any(c.strip() for c in present) and len(present) <= 1:
            continue  # a blank line: no data, not a row
        first = cells[0]
        if isinstance(first, str) and first.startswith(_OVERLONG):
            fields = overlong[int(first[len(_OVERLONG) :])]
            values = dict(zip(columns, fields, strict=False))
            error = f"row has {len(fields)} fields, the header has {len(columns)}"
        else:
            values = {
                col: cell if isinstance(cell, str) else "" for col, cell in zip(columns, cells, strict=True)
            }
            error = (
                None
                if len(present) == len(columns)
                else (f"row has {len(present)} fields, the header has {len(columns)}")
            )
        rows.append(TableRow(number=index + 1, values=values, field_error=error))
    return rows
