"""One reader of input files for every entry point: a file in, its rows out, one at a time.

``open_table`` takes a path, a binary stream (an upload's spooled file) or bytes and reads just enough to
know the format and the header; iterating the ``Table`` then yields ``Row``s — the spreadsheet line number
and the cells by column name as written — reading the file as it goes, so memory does not grow with it:

* CSV: Excel's dialects — ``,`` ``;`` or tab separators (chosen by which one splits the header into known
  columns; an Excel ``sep=;`` first line is obeyed), quoted cells and headers, CRLF, a byte-order mark,
  UTF-8 / UTF-16 / Windows-1252 (``text.Utf8Text``). Blank lines are skipped but still counted, so line
  numbers are the ones a spreadsheet shows (header = line 1).
* JSON: a list of objects, or ``{"rows": [...]}`` / ``{"devices": [...]}``, streamed with ijson (its pure
  Python backend: exact integers of any length, unlike the C one, so a 20-digit ICCID written as a number
  keeps its digits). Rows are numbered by their position in the list, from 1.
* xlsx: the first sheet, through openpyxl's read-only (streaming) mode; line 1 is the header. Formula cells
  read as their formula (``=…``), which the shared formula rule refuses.

Limits: ``Limits.max_bytes`` (refused before reading when the size is known, else as soon as it is passed)
and ``Limits.max_rows`` (refused when row ``max_rows + 1`` is read). Whatever cannot be read raises
``InputRefused`` naming the line; nothing else escapes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import re
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import ijson  # type: ignore[import-untyped]

from bulkchange.input.cells import cell_text, printable, unclean_text
from bulkchange.input.columns import Columns, Needs
from bulkchange.input.problems import InputProblem, InputRefused, InputTooLarge
from bulkchange.input.text import CHUNK, ByteReader, Counted, Utf8Text, too_large

Source = Path | bytes | IO[bytes]

_DELIMITERS = (",", ";", "\t", "|")
_SEP_LINE = re.compile(r'"?sep=(.)"?[\r\n]*', re.IGNORECASE)
_MAX_JSON_DEPTH = 32  # a row is an object of values and short lists; deeper nesting is refused
_JSON_LISTS = ("rows", "devices")
_ZIP_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0"  # Excel 97-2003 .xls
# The workbook's shared-string table is the one part openpyxl keeps whole: bounded against zip bombs.
_SHARED_STRINGS_PER_BYTE = 8


@dataclass(frozen=True)
class Limits:
    """``BULKCHANGE_MAX_UPLOAD_BYTES`` and ``BULKCHANGE_MAX_ROWS_PER_BULK_CHANGE``, passed in by the caller."""

    max_bytes: int
    max_rows: int


@dataclass(frozen=True)
class Row:
    """One data row: its line number, its cells by column name as written, and what the reader found wrong
    with it on its own (cells beyond the header; a JSON key that is no known column, the first time)."""

    line: int
    cells: dict[str, Any]
    problems: tuple[InputProblem, ...] = ()


@dataclass
class Table:
    """An opened input: its format and header (None for JSON), the header's problems, and its rows.

    Iterate it once; it closes what it opened when the rows end (or use it as a context manager).
    """

    kind: str  # "csv", "json", "xlsx" or "records"
    header: tuple[str, ...] | None
    columns: Columns
    limits: Limits
    rows: Iterator[Row]
    closer: Callable[[], None] = lambda: None
    header_line: int = 1
    problems: list[InputProblem] = field(default_factory=list)
    rows_read: int = 0
    _used: bool = False

    def has_column(self, name: str) -> bool:
        """Whether the header names column ``name`` (any spelling of it)."""
        return any((c := self.columns.find(h)) is not None and c.name == name for h in self.header or ())

    def missing(self, needs: Needs) -> list[InputProblem]:
        """The needed columns the header lacks (nothing for JSON: each object is checked on its own)."""
        if self.header is None:
            return []
        return self.columns.missing(self.header, needs, line=self.header_line)

    def __iter__(self) -> Iterator[Row]:
        if self._used:
            raise RuntimeError("a table's rows are read once")
        self._used = True
        return self._limited()

    def _limited(self) -> Iterator[Row]:
        seen: set[str] = set()
        try:
            for count, row in enumerate(self.rows, start=1):
                self.rows_read = count
                if count > self.limits.max_rows:
                    raise InputTooLarge(
                        f"more than {self.limits.max_rows:,} rows; the limit per bulk change is "
                        f"{self.limits.max_rows:,} (BULKCHANGE_MAX_ROWS_PER_BULK_CHANGE): split the file"
                    )
                yield row if self.header is not None else self._with_unknown_keys(row, seen)
        finally:
            self.close()

    def _with_unknown_keys(self, row: Row, seen: set[str]) -> Row:
        """A JSON row's own problems: a key no column answers to (once, at the first row that has it), and
        text no database stores."""
        found = list(row.problems)
        for key, value in row.cells.items():
            name = printable(str(key))
            if name not in seen and self.columns.find(str(key)) is None:
                seen.add(name)
                found.append(self.columns.unknown(name, row.line))
            if why := unclean_text(value) or unclean_text(key):
                found.append(InputProblem(row.line, name, why))
        return row if len(found) == len(row.problems) else Row(row.line, row.cells, tuple(found))

    def close(self) -> None:
        closer, self.closer = self.closer, lambda: None
        closer()

    def __enter__(self) -> Table:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def records(rows: Iterable[Any], *, columns: Columns, limits: Limits) -> Table:
    """Rows that are already parsed (a JSON request body), checked as a JSON file's would be."""

    def numbered() -> Iterator[Row]:
        for number, raw in enumerate(rows, start=1):
            if isinstance(raw, dict):
                yield Row(number, dict(raw))
            else:
                why = f"a row must be an object, got {type(raw).__name__}"
                yield Row(number, {}, (InputProblem(number, "row", why),))

    return Table("records", None, columns, limits, numbered())


def open_table(source: Source, *, columns: Columns, limits: Limits, filename: str | None = None) -> Table:
    """Open ``source`` and read its header; the rows are read as the returned table is iterated.

    Raises ``InputRefused`` (``InputTooLarge`` over a limit) when the file cannot be read at all.
    """
    stream, owned = _binary(source)
    name = (filename or (str(source) if isinstance(source, Path) else "")).lower()
    closer = stream.close if owned else (lambda: None)
    try:
        size = _size(source, stream)
        if size is not None and size > limits.max_bytes:
            raise too_large(size, limits.max_bytes)
        start = stream.tell() if stream.seekable() else 0
        head = stream.read(len(_ZIP_MAGIC))
        if head.startswith(_OLE_MAGIC) or name.endswith(".xls"):
            raise InputRefused("an Excel 97-2003 workbook (.xls): save it as .xlsx or CSV UTF-8")
        if head.startswith(_ZIP_MAGIC) or name.endswith((".xlsx", ".xlsm")):
            if stream.seekable():
                stream.seek(start)
                return _xlsx_table(stream, columns, limits, closer)
            spooled = _spool(Counted(stream, head, limits.max_bytes))
            closer()
            return _xlsx_table(spooled, columns, limits, spooled.close)
        text = io.BufferedReader(Utf8Text(Counted(stream, head, limits.max_bytes)), CHUNK)
        first = text.peek(CHUNK).lstrip()[:1]
        if not first and not text.peek(CHUNK):
            raise InputRefused("the file is empty")
        if name.endswith(".json") or first in (b"[", b"{"):
            return Table("json", None, columns, limits, _json_rows(text), closer)
        header, rows = _csv_rows(text, columns)
        return Table("csv", header, columns, limits, rows, closer, problems=columns.header_problems(header))
    except BaseException:
        closer()
        raise


def _binary(source: Source) -> tuple[IO[bytes], bool]:
    """The source as a binary stream, and whether we opened it (and so close it)."""
    if isinstance(source, bytes):
        return io.BytesIO(source), True
    if isinstance(source, Path):
        try:
            return source.open("rb"), True
        except OSError as exc:
            raise InputRefused(f"cannot read the file: {exc.strerror or exc}") from exc
    return source, False


def _size(source: Source, stream: IO[bytes]) -> int | None:
    """The bytes left to read, when that can be known without reading them."""
    if isinstance(source, Path):
        with contextlib.suppress(OSError):
            return source.stat().st_size
    if stream.seekable():
        here = stream.tell()
        end = stream.seek(0, io.SEEK_END)
        stream.seek(here)
        return end - here
    return None


def _spool(stream: ByteReader) -> IO[bytes]:
    """A stream that cannot seek, copied to a temporary file (a workbook is a zip: it must seek)."""
    spooled = tempfile.SpooledTemporaryFile(max_size=CHUNK * 16)  # noqa: SIM115 - closed by its table
    while chunk := stream.read(CHUNK):
        spooled.write(chunk)
    spooled.seek(0)
    return spooled


# ------------------------------------------------------------------------------------------------------ CSV


def _csv_rows(text: IO[bytes], columns: Columns) -> tuple[tuple[str, ...], Iterator[Row]]:
    lines = _checked_lines(io.TextIOWrapper(text, encoding="utf-8", newline=""))
    first = next(lines, "")
    delimiter = None
    if sep := _SEP_LINE.fullmatch(first):
        delimiter = sep.group(1)  # Excel's own hint line: obeyed, and not a spreadsheet line
        first = next(lines, "")
    reader = csv.reader(itertools.chain([first], lines), delimiter=delimiter or _sniff(first, columns))
    try:
        header = tuple(cell.strip() for cell in next(reader, []))
    except csv.Error as exc:
        raise InputRefused(f"not valid CSV: {exc}", line=1, column="header") from exc
    return header, _csv_records(reader, header)


def _checked_lines(text: IO[str]) -> Iterator[str]:
    for number, line in enumerate(text, start=1):
        if "\x00" in line:
            raise InputRefused(
                f"NUL byte at line {number}: a binary file, or UTF-16 without a byte-order mark; save it as CSV UTF-8"
            )
        yield line


def _sniff(header_line: str, columns: Columns) -> str:
    """The separator that splits the header into the most known columns (then the most cells; ``,`` on a
    tie, so a one-column file is read with the default)."""

    def score(delimiter: str) -> tuple[int, int]:
        cells = next(csv.reader([header_line], delimiter=delimiter), [])
        return sum(columns.find(c) is not None for c in cells), len(cells)

    return max(_DELIMITERS, key=score)


def _csv_records(reader: Any, header: tuple[str, ...]) -> Iterator[Row]:
    line = 1
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InputRefused(f"not valid CSV: {exc}", line=line + 1, column="row") from exc
        line += 1
        row = _row(line, header, record)
        if row is not None:
            yield row


def _row(line: int, header: tuple[str, ...], values: list[str]) -> Row | None:
    """The cells of one record by column name; None for a blank line (Excel leaves some at the end)."""
    if not any(v.strip() for v in values):
        return None
    cells = {}
    for name, value in zip(header, values, strict=False):
        if name and name not in cells:
            cells[name] = value
    extra = [v for v in values[len(header) :] if v.strip()]
    if not extra:
        return Row(line, cells)
    why = f"{len(extra)} cell(s) beyond the header's {len(header)} column(s)"
    return Row(line, cells, (InputProblem(line, "row", why),))


# ----------------------------------------------------------------------------------------------------- JSON


def _json_rows(stream: io.BufferedReader[Utf8Text]) -> Iterator[Row]:
    """The objects of a top-level list (or of the list under ``rows`` / ``devices``), one at a time."""
    events = _json_events(stream)
    number = 0
    try:
        first, _ = next(events, (None, None))
        if first == "start_map" and not _seek_list(events):
            raise InputRefused('JSON input must be a list of objects or {"rows": [...]}')
        if first not in ("start_map", "start_array"):
            raise InputRefused('JSON input must be a list of objects or {"rows": [...]}')
        for event, _value in events:
            if event == "end_array":
                break
            number += 1
            if event != "start_map":
                raise InputRefused(f"row {number} is not a JSON object", line=number, column="row")
            yield Row(number, _object(events, number))
        number = 0  # past the list: what follows is the file's problem, not a row's
        if first == "start_map":
            _skip_rest(events, depth=1)
        for _event in events:
            raise InputRefused("unexpected data after the JSON list")
    except ijson.JSONError as exc:
        where = number + 1 if number else 0
        raise InputRefused(f"not valid JSON: {str(exc)[:200]}", line=where, column="row" if where else "file") from exc


def _json_events(stream: io.BufferedReader[Utf8Text]) -> Iterator[tuple[str, Any]]:
    """ijson's parse events, pushed a chunk at a time. Pushing (rather than ijson's pulling generator) lets
    a reader that stops early close the parser here, where its "incomplete JSON" complaint is expected,
    instead of having it raised again when the abandoned parser is garbage-collected."""
    found = ijson.sendable_list()
    parser = ijson.get_backend("python").basic_parse_coro(found)
    finished = False
    try:
        while chunk := stream.read1(CHUNK):  # what one read gives: never more than the rows consumed need
            try:
                parser.send(chunk)
            finally:  # the events before a syntax error first, so the error names the right row
                yield from found
                del found[:]
        finished = True
        try:
            parser.close()  # the end of the input: raises when the JSON is unfinished
        finally:
            yield from found
    finally:
        if not finished:
            with contextlib.suppress(ijson.JSONError):
                parser.close()


def _seek_list(events: Iterator[tuple[str, Any]]) -> bool:
    """Inside the top-level object: move to the start of its ``rows`` (or ``devices``) list."""
    for event, value in events:
        if event == "end_map":
            return False
        if event == "map_key" and value in _JSON_LISTS:
            kind, _ = next(events)
            if kind == "start_array":
                return True
            _skip_value(events, kind)
        elif event == "map_key":
            kind, _ = next(events)
            _skip_value(events, kind)
    return False


def _skip_value(events: Iterator[tuple[str, Any]], kind: str) -> None:
    if kind in ("start_map", "start_array"):
        _skip_rest(events, depth=1)


def _skip_rest(events: Iterator[tuple[str, Any]], *, depth: int) -> None:
    """Read past the end of the container we are ``depth`` levels inside."""
    for event, _value in events:
        if event in ("start_map", "start_array"):
            depth += 1
            if depth > _MAX_JSON_DEPTH:
                raise InputRefused("nested too deeply")
        elif event in ("end_map", "end_array"):
            depth -= 1
            if depth == 0:
                return


def _object(events: Iterator[tuple[str, Any]], number: int) -> dict[str, Any]:
    """The object whose ``start_map`` was just read, built from its events."""
    builder = ijson.ObjectBuilder()
    builder.event("start_map", None)
    depth = 1
    for event, value in events:
        if event in ("start_map", "start_array"):
            depth += 1
            if depth > _MAX_JSON_DEPTH:
                raise InputRefused("nested too deeply", line=number, column="row")
        elif event in ("end_map", "end_array"):
            depth -= 1
        builder.event(event, value)
        if depth == 0:
            return dict(builder.value)
    raise InputRefused("the JSON ends inside a row", line=number, column="row")


# ----------------------------------------------------------------------------------------------------- xlsx


def _xlsx_table(stream: IO[bytes], columns: Columns, limits: Limits, closer: Callable[[], None]) -> Table:
    """The first sheet of a workbook; line 1 is the header."""
    # openpyxl is imported when a workbook is read, as boto3 is by the AWS code: a CSV or JSON submission and
    # the CSV export (``bulkchange export`` uses ``input.is_formula``) start without it.
    import openpyxl

    try:
        with zipfile.ZipFile(stream) as archive:
            strings = next((i for i in archive.infolist() if i.filename == "xl/sharedStrings.xml"), None)
        if strings is not None and strings.file_size > _SHARED_STRINGS_PER_BYTE * limits.max_bytes:
            raise InputTooLarge("the workbook's text expands too far to be read; save it as CSV UTF-8")
        stream.seek(0)
        book = openpyxl.load_workbook(stream, read_only=True, data_only=False, keep_links=False)
    except InputRefused:
        raise
    except Exception as exc:  # openpyxl reports a broken workbook with many exception types
        raise InputRefused(f"not an xlsx workbook that can be read ({type(exc).__name__}); save it again") from exc

    def close() -> None:
        book.close()
        closer()

    if not book.worksheets:
        close()
        raise InputRefused("the workbook has no sheet")
    sheet = book.worksheets[0]
    sheet.reset_dimensions()  # a stale <dimension> must not cut rows off
    values = sheet.iter_rows(min_row=1, values_only=True)
    header = tuple((cell_text(v) or "").strip() for v in _next_values(values, 1) or ())
    rows = _xlsx_records(values, header)
    return Table("xlsx", header, columns, limits, rows, close, problems=columns.header_problems(header))


def _next_values(values: Iterator[Any], line: int) -> tuple[Any, ...] | None:
    """The next row's values, or None after the last row."""
    try:
        return tuple(next(values))
    except StopIteration:
        return None
    except Exception as exc:  # a damaged sheet: openpyxl raises whatever its XML parser raises
        raise InputRefused(f"the sheet cannot be read ({type(exc).__name__})", line=line, column="row") from exc


def _xlsx_records(values: Iterator[Any], header: tuple[str, ...]) -> Iterator[Row]:
    for line in itertools.count(2):
        record = _next_values(values, line)
        if record is None:
            return
        row = _row(line, header, [cell_text(v) or "" for v in record])
        if row is not None:
            yield row
