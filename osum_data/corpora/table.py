"""Reading a metadata table (TSV or CSV) line by line, so that every data row keeps its row number
and no row can swallow another.

Speech-corpus transcripts are not CSV-quoted: `"Hi," she said.` is a transcript, not a quoted
field, and a CSV reader that honours quotes would glue every following line into one field until
the next quote (one unbalanced quote at row 10 of 1,000 rows silently dropped 991). So:

- TSV is split on tabs and nothing else: quotes are ordinary characters.
- CSV (`metadata.csv`) keeps standard quoting for commas inside a field, but each physical line is
  parsed on its own: a quote can never run past its line, and an unbalanced one rejects that row.
- Each line is decoded on its own: a line that is not UTF-8 rejects that row, naming the byte.
- The row number a user sees is the line number minus 1 (the header); blank lines are no rows but
  keep the numbering. `count_rows` counts the rows from the file itself, so an importer can check
  `rows = cuts + rejected` against the real line count.
"""

from __future__ import annotations

import csv
import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from osum_data.corpora.text import BOMS, TextFileError, check_line_ends, looks_like
from osum_data.errors import UsageError


@dataclass(frozen=True)
class TableRow:
    number: int  # 1-based data row number (line number - 1)
    values: dict[str, str]  # lower-cased column name -> cell ("" where the row is short)
    field_error: str | None = None  # set when the row cannot be split into the header's fields
    error_code: str = "wrong_field_count"  # the reject code of `field_error`


def find_metadata(corpus_dir: Path) -> Path:
    for name in ("metadata.tsv", "metadata.csv"):
        if (corpus_dir / name).is_file():
            return corpus_dir / name
    raise FileNotFoundError(f"no metadata.tsv or metadata.csv in {corpus_dir}")


class Table:
    """A metadata table opened for streaming: `columns` from the header, then `rows()`."""

    def __init__(self, path: Path, required: tuple[str, ...], optional: tuple[str, ...] | None = None):
        """`optional`: the other columns the importer reads. When given, a column that is neither is
        named: refused if it is close to a known column the table lacks (a typo such as `emotoin`
        would import every row without that label), else listed in `ignored`."""
        self.path = Path(path)
        self.ignored: list[str] = []
        self.is_tsv = self.path.suffix.lower() == ".tsv"
        with open(self.path, "rb") as f:
            first = f.readline()
        if first.startswith(tuple(BOMS)) or (first.count(b"\0") * 4 >= len(first) > 0):
            raise TextFileError(f"{self.path}: the file is {looks_like(first)}, not UTF-8: save it as UTF-8")
        check_line_ends(self.path, first)
        if not first.strip():
            raise UsageError(
                f"{self.path} is empty: the first line must name the columns "
                f"({', '.join(required)}, separated by {'tabs' if self.is_tsv else 'commas'})"
            )
        try:
            header = first.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise TextFileError(
                f"{self.path}: line 1 (the header) is not UTF-8 ({_byte(first, e)}); the file looks like "
                f"{looks_like(first)}: save it as UTF-8"
            ) from None
        cells = self._split(header)
        if cells is None:
            raise UsageError(f"{self.path}: the header line has an unbalanced quote")
        self.columns = [c.strip().lower() for c in cells]
        duplicated = sorted({c for c in self.columns if self.columns.count(c) > 1})
        if duplicated:
            raise UsageError(f"{self.path}: duplicate column(s) {', '.join(duplicated)}")
        known = tuple(required) + tuple(optional or ())
        missing = [c for c in required if c not in self.columns]
        if missing:
            raise UsageError(
                f"{self.path}: missing required column(s) {', '.join(missing)}"
                f"{typo_hint(missing, self.columns)}; header has {', '.join(self.columns)}"
            )
        if optional is not None:
            self.ignored = check_unknown_columns(self.path, self.columns, known)

    def _split(self, line: str) -> list[str] | None:
        line = line.rstrip("\r\n")
        if self.is_tsv:
            return line.split("\t")
        try:
            return next(csv.reader([line], strict=True))
        except (csv.Error, StopIteration):
            return None

    def _raw_lines(self) -> Iterator[tuple[int, bytes]]:
        """(row number, line bytes) of the non-blank data lines."""
        with open(self.path, "rb") as f:
            f.readline()  # the header
            for number, line in enumerate(f, 1):
                if line.strip():
                    yield number, line

    def count_rows(self) -> int:
        return sum(1 for _ in self._raw_lines())

    def rows(self) -> Iterator[TableRow]:
        n_cols = len(self.columns)
        for number, raw in self._raw_lines():
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield TableRow(number, {}, f"row {number} is not UTF-8 ({_byte(raw, e)})", "not_utf8")
                continue
            fields = self._split(line)
            if fields is None:
                yield TableRow(
                    number,
                    {},
                    f"row {number} has an unbalanced or misplaced quote: {line.strip()[:120]!r}",
                    "bad_quoting",
                )
                continue
            values = dict(zip(self.columns, fields, strict=False))
            for col in self.columns[len(fields) :]:
                values[col] = ""
            error = None
            if len(fields) != n_cols:
                error = f"row has {len(fields)} fields, the header has {n_cols}"
            yield TableRow(number, values, error)


def _byte(raw: bytes, e: UnicodeDecodeError) -> str:
    return f"byte 0x{raw[e.start]:02x} at column {e.start + 1}"


def close_column(name: str, candidates: list[str]) -> str | None:
    """The known column `name` is probably a typo of, if any (difflib's similarity >= 0.75)."""
    found = difflib.get_close_matches(name, candidates, n=1, cutoff=0.75)
    return found[0] if found else None


def typo_hint(missing: list[str], columns: list[str]) -> str:
    """' (did you mean X for Y?)' for the missing columns a present column looks like a typo of."""
    hints = []
    for want in missing:
        near = close_column(want, [c for c in columns if c])
        if near is not None:
            hints.append(f"{near!r} for {want!r}")
    return f" (is {', '.join(hints)} a typo?)" if hints else ""


def check_unknown_columns(path: Path, columns: list[str], known: tuple[str, ...]) -> list[str]:
    """The header's columns the importer does not read. One close to a known column the header
    lacks is a ValueError naming both (its values would be dropped: a label that silently vanishes
    from every row); the others are returned, for the import report to name."""
    unknown = [c for c in columns if c not in known]
    absent = [k for k in known if k not in columns]
    typos = [(c, close_column(c, absent)) for c in unknown]
    typos = [(c, k) for c, k in typos if k is not None]
    if typos:
        said = ", ".join(f"{c!r} (did you mean {k!r}?)" for c, k in typos)
        raise UsageError(
            f"{path}: unknown column(s) {said}; rename them, or their values are not imported "
            f"(known columns: {', '.join(known)})"
        )
    return unknown
