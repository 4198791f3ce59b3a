"""Bytes in, UTF-8 out: the byte limit and the encodings spreadsheets save text in.

* ``Counted`` — a binary stream that refuses to give more than ``max_bytes`` (for streams whose size is not
  known up front), and replays the few bytes read to recognise the format.
* ``Utf8Text`` — the text of a stream as UTF-8 bytes: UTF-8 with or without a byte-order mark, UTF-16 with
  one (Excel's "Unicode text"), and Windows-1252 (Excel's plain "CSV" on Western Windows). A file without a
  BOM is read as UTF-8 until its first byte that is not ASCII: if that byte does not start valid UTF-8 and
  nothing before it was anything but ASCII, the file is Windows-1252 from the start; invalid UTF-8 after
  valid non-ASCII UTF-8 is a file of mixed encodings and is refused. Either way the decoding is incremental,
  a chunk at a time.
"""

from __future__ import annotations

import codecs
import io
from typing import Any, Protocol

from bulkchange.input.problems import InputRefused, InputTooLarge

CHUNK = 1 << 16
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


class ByteReader(Protocol):
    """Anything with a binary ``read`` (a file, an upload's spooled file, ``io.BytesIO``, ``Counted``)."""

    def read(self, size: int = -1, /) -> bytes | None: ...


def too_large(size: int | str, max_bytes: int) -> InputTooLarge:
    return InputTooLarge(
        f"the file is {size if isinstance(size, str) else f'{size:,}'} bytes; the limit is {max_bytes:,} "
        "(BULKCHANGE_MAX_UPLOAD_BYTES): split it"
    )


class Counted(io.RawIOBase):
    """``raw`` read through: ``head`` (bytes already taken from it) first, then the rest, never more than
    ``max_bytes`` in all (``InputTooLarge`` past it)."""

    def __init__(self, raw: ByteReader, head: bytes, max_bytes: int) -> None:
        super().__init__()
        self._raw = raw
        self._head = head
        self._max = max_bytes
        self._count = len(head)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._raw.read(len(view)) or b""
        if not data:
            return 0
        self._count += len(data)
        if self._count > self._max:
            raise too_large(f"more than {self._max:,}", self._max)
        view[: len(data)] = data
        return len(data)


class Utf8Text(io.RawIOBase):
    """The text of ``raw`` re-encoded as UTF-8 (see the module docstring for what is read)."""

    def __init__(self, raw: ByteReader) -> None:
        super().__init__()
        self._raw = raw
        self._out = b""
        self._eof = False
        self._started = False
        self._encoding = "utf-8"
        self._bom = False
        self._decoder: codecs.IncrementalDecoder = codecs.getincrementaldecoder("utf-8")()
        self._ascii_so_far = True
        self._offset = 0  # bytes of ``raw`` decoded so far

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._out and not self._eof:
            self._out = self._next()
        n = min(len(view), len(self._out))
        view[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def _next(self) -> bytes:
        data = self._raw.read(CHUNK) or b""
        if not self._started:
            self._started = True
            while len(data) < 4 and (more := self._raw.read(CHUNK) or b""):
                data += more  # a byte-order mark split over two short reads
            data = self._take_bom(data)
        final = not data
        if final:
            self._eof = True
        if self._encoding == "utf-8" and self._ascii_so_far and data.isascii():
            self._offset += len(data)
            return data  # ASCII is UTF-8 as it is
        try:
            text = self._decoder.decode(data, final)
        except UnicodeDecodeError as exc:
            text = self._fall_back(data, final, exc)
        self._ascii_so_far = self._ascii_so_far and data.isascii()
        self._offset += len(data)
        return text.encode("utf-8")

    def _take_bom(self, data: bytes) -> bytes:
        for bom, encoding in _BOMS:
            if data.startswith(bom):
                self._bom = True
                self._encoding = encoding
                self._decoder = codecs.getincrementaldecoder(encoding)()
                return data[len(bom) :] if encoding == "utf-8" else data  # the UTF-16 decoder reads its BOM
        return data

    def _fall_back(self, data: bytes, final: bool, exc: UnicodeDecodeError) -> str:
        """Windows-1252 when the first non-ASCII byte of a BOM-less file is not UTF-8; else refuse."""
        where = self._offset + exc.start
        if self._encoding == "utf-8" and not self._bom and self._ascii_so_far and data[: exc.start].isascii():
            self._encoding = "cp1252"
            self._decoder = codecs.getincrementaldecoder("cp1252")()
            try:
                return self._decoder.decode(data, final)
            except UnicodeDecodeError as again:
                where = self._offset + again.start
                raise InputRefused(
                    f"the file is neither UTF-8 nor Windows-1252 text (byte {where:,}); save it as CSV UTF-8"
                ) from again
        name = "UTF-16" if self._encoding == "utf-16" else "UTF-8"
        raise InputRefused(f"the file is not {name} text (byte {where:,}: {exc.reason}); save it as CSV UTF-8") from exc
