"""Strict reading of delimited text files (CSV, TSV, RepLab's .dat): decoding, quoting, delimiters, field limits.

Why strict: a stray quote that the csv module would silently accept merges rows, and a bad byte read leniently
becomes a wrong text; both would change the data without a word. Every error names the file and line and says how
to fix it.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Iterator, Sequence
from pathlib import Path

from edgemodels.build.data.dataset import DataError


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found; check the path (and that the data set is complete)") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc}); check permissions") from exc


def _decode(data: bytes, where: str, encoding: str) -> str:
    """UTF-8 (BOM optional) strictly, naming the line of bad bytes; or cp1252 with latin-1 per-line fallback."""
    if encoding == "cp1252":
        try:
            return data.decode("cp1252")
        except UnicodeDecodeError:  # a few bytes (0x81, 0x8D, ...) are unmapped in cp1252
            parts = []
            for line in data.splitlines(keepends=True):
                try:
                    parts.append(line.decode("cp1252"))
                except UnicodeDecodeError:
                    parts.append(line.decode("latin-1"))
            return "".join(parts)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{where}: line {line}: bytes {data[exc.start:exc.end]!r} are not valid UTF-8; re-save the file "
            "as UTF-8 (it may be in a legacy encoding such as cp1252)"
        ) from exc


def _records(text: str, where: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number where the record starts, fields); the header is line 1; blank lines skipped.

    Strict: a quote must close at the end of its field (else a stray quote silently merges rows), and a
    quoted field may span lines only in comma/semicolon/pipe files (RFC 4180), never in a tab-separated one.
    """
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar='"', strict=True)
    start = 1
    while True:
        try:
            with _field_size_limit(len(text) + 1):  # no field can be longer than the file
                row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. an unbalanced quote swallowing the rest of the file
            raise DataError(
                f"{where}: line {start}: cannot parse the row ({exc}); a double quote that opens a field must "
                "close at the end of that field: check for an unbalanced double quote and fix or delete that row"
            ) from exc
        if delimiter == "\t" and reader.line_num > start:
            raise DataError(
                f"{where}: line {start}: a quoted field runs on to line {reader.line_num}, and a tab-separated "
                "file cannot hold line breaks in a field; check for an unbalanced double quote on line "
                f"{start} and fix or delete that row"
            )
        if row:
            yield start, row
        start = reader.line_num + 1


@contextlib.contextmanager
def _field_size_limit(n: int) -> Iterator[None]:
    """The csv module's field size limit (process-wide, 128 KiB by default) raised to `n` for one read, then put
    back: a long quoted field is data, not a parse error, and no other reader in the process sees the change."""
    old = csv.field_size_limit()
    csv.field_size_limit(max(old, n))
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _table(
    data: bytes, where: str, *, encoding: str, delimiter: str, required: Sequence[str]
) -> tuple[dict[str, int], Iterator[tuple[int, list[str]]]]:
    """Header column map (lower-cased names) and an iterator over rows with the right field count."""
    records = _records(_decode(data, where, encoding), where, delimiter)
    first = next(records, None)
    if first is None:
        raise DataError(f"{where}: file is empty; expected a header row with columns {', '.join(required)}")
    header = [h.strip().lower() for h in first[1]]
    columns = {name: i for i, name in reversed(list(enumerate(header)))}
    missing = [name for name in required if name not in columns]
    if missing:
        sep = "tab" if delimiter == "\t" else repr(delimiter)
        raise DataError(
            f"{where}: line 1 (header): missing column(s) {', '.join(missing)}; found {first[1]} "
            f"({sep}-separated); add a header row naming the columns {', '.join(required)}"
        )

    def rows() -> Iterator[tuple[int, list[str]]]:
        for line, row in records:
            if len(row) != len(header):
                raise DataError(
                    f"{where}: line {line}: malformed row with {len(row)} field(s), the header has {len(header)} "
                    f"({', '.join(header)}); fix the row (stray delimiter or quote?) or delete it"
                )
            yield line, row

    return columns, rows()


def _delimiter_for(path: Path) -> str:
    """Tab for .tsv/.tab, comma for .csv, else sniffed from the start of the file."""
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".tab"):
        return "\t"
    if suffix == ".csv":
        return ","
    head = _read_bytes(path)[:65536].decode("utf-8-sig", errors="replace")
    try:
        return csv.Sniffer().sniff(head, delimiters=",\t;|").delimiter
    except csv.Error:
        return ","

