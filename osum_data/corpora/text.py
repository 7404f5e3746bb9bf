"""Reading a corpus's text files (transcripts, metadata tables) as UTF-8, and saying plainly why not.

Corpora arrive re-saved by spreadsheets and old editors: UTF-16 (Excel's "Unicode text"), Latin-1
or Windows-1252 transcripts, classic-Mac CR-only line ends. Guessing an encoding would import wrong
characters without a word, so a file that is not UTF-8 is refused with its name, the first line and
byte that are not, and what the file looks like instead (`TextFileError`, a ValueError: exit 2).
"""

from __future__ import annotations

from pathlib import Path

from osum_data.errors import UsageError

BOMS = {b"\xff\xfe": "UTF-16 LE", b"\xfe\xff": "UTF-16 BE"}


class TextFileError(UsageError):
    """A corpus text file that cannot be read as UTF-8 text lines."""


def looks_like(raw: bytes) -> str:
    """A guess at what a non-UTF-8 text is, for the message only (nothing is decoded with it)."""
    for bom, name in BOMS.items():
        if raw.startswith(bom):
            return f"{name} (it starts with a byte-order mark)"
    head = raw[:4096]
    if head and head.count(b"\0") * 4 >= len(head):
        return "UTF-16 (every other byte is zero)"
    return "Latin-1 or Windows-1252 (8-bit)"


def decode_error(path: Path | str, raw: bytes, e: UnicodeDecodeError) -> TextFileError:
    """The one-line error for `raw` (the whole file) failing to decode at `e.start`."""
    line = raw.count(b"\n", 0, e.start) + 1
    column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
    return TextFileError(
        f"{path}: line {line} is not UTF-8 (byte 0x{raw[e.start]:02x} at column {column}); the file "
        f"looks like {looks_like(raw)}: save it as UTF-8"
    )


def check_line_ends(path: Path | str, text: str | bytes) -> None:
    """Refuse CR-only line ends (classic Mac): the file would read as one line."""
    cr, nl = ("\r", "\n") if isinstance(text, str) else (b"\r", b"\n")
    stripped = text.rstrip(cr + nl)
    if cr in stripped and nl not in stripped:
        raise TextFileError(
            f"{path}: lines end in CR only (classic Mac line ends), so the file reads as one line; "
            "save it with LF (or CRLF) line ends"
        )


def read_text(path: Path | str) -> str:
    """The file as UTF-8 text (a UTF-8 byte-order mark is dropped); TextFileError otherwise."""
    raw = Path(path).read_bytes()
    if raw.startswith(tuple(BOMS)):
        raise TextFileError(f"{path}: the file is {looks_like(raw)}, not UTF-8: save it as UTF-8")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise decode_error(path, raw, e) from None
    check_line_ends(path, text)
    return text


def check_utf8(path: Path | str) -> None:
    """Raise the TextFileError for `path` if it is not UTF-8 (for readers that stream the file and
    met a UnicodeDecodeError whose position is relative to a buffer, not to the file)."""
    raw = Path(path).read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise decode_error(path, raw, e) from None
