"""The ``.kcz`` container: a versioned header, a checksummed payload, bounded reads.

Layout (little-endian)::

    magic    8 bytes   89 'K' 'C' 'Z' 0D 0A 1A 0A   (PNG-style: catches text-mode damage)
    version  u32       1
    flags    u32       0 (reserved)
    length   u64       payload bytes; the file ends right after the payload
    sha256   32 bytes  of the payload
    payload  length bytes

The payload is a sequence of fixed-width integers, length-prefixed byte strings and
zstandard blobs (``u64 raw length, u64 compressed length, frame``); what it means is
the packer's business (:mod:`.packing`).  Every read is checked against the bytes
that remain, and a blob's raw length against both a total budget and the most a
zstandard frame of its size can hold, so hostile input cannot make the reader
allocate much more than the file could legitimately unpack to.  Errors are
:class:`~kaldi_compress.errors.KaldiFormatError`: file, byte offset, what was expected.
"""
from __future__ import annotations

import hashlib
import struct

import numpy as np
import zstandard

from ..errors import KaldiFormatError, show_bytes

MAGIC = b"\x89KCZ\r\n\x1a\n"
VERSION = 1
HEADER = struct.Struct("<8sIIQ32s")
ZSTD_LEVEL = 19
# A zstandard block holds at most 128 KiB and takes at least 4 bytes (an RLE block):
# no frame decompresses to more than 32768 times its size.
MAX_ZSTD_RATIO = 1 << 15

_INTS = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}


def seal(payload: bytes) -> bytes:
    """The container bytes for ``payload``: header with length and checksum, payload."""
    return HEADER.pack(MAGIC, VERSION, 0, len(payload), hashlib.sha256(payload).digest()) \
        + payload


def open_payload(buf: bytes | bytearray, path: str, budget: int) -> "Cursor":
    """Check the header and checksum of a container; a cursor over its payload.
    ``budget`` bounds the total raw length of the payload's blobs."""
    view = memoryview(buf)
    if len(view) < HEADER.size:
        what = "the magic bytes of a .kcz pack" if len(view) < len(MAGIC) else \
            f"a {HEADER.size}-byte .kcz header"
        raise KaldiFormatError(path, 0, what, f"{len(view)}-byte file")
    magic, version, flags, length, digest = HEADER.unpack_from(view, 0)
    if magic != MAGIC:
        raise KaldiFormatError(path, 0, "the magic bytes of a .kcz pack", show_bytes(magic))
    if version != VERSION:
        raise KaldiFormatError(path, 8, f".kcz version {VERSION}", f"version {version}")
    if flags != 0:
        raise KaldiFormatError(path, 12, "flags 0", str(flags))
    have = len(view) - HEADER.size
    if length != have:
        raise KaldiFormatError(path, 16, f"a payload of {length} bytes (the header's length)",
                               f"{have} bytes after the header"
                               + (" (truncated file)" if have < length else ""))
    payload = view[HEADER.size:]
    if hashlib.sha256(payload).digest() != digest:
        raise KaldiFormatError(path, 24, "the payload's sha256 to match the header "
                               "(corrupted file)", "a different checksum")
    return Cursor(payload, path, HEADER.size, budget)


class Writer:
    """Builds a payload."""

    def __init__(self):
        self.parts: list[bytes] = []

    def int(self, value: int, width: int) -> None:
        self.parts.append(struct.pack(_INTS[width], value))

    def bytes(self, data: bytes, width: int = 4) -> None:
        """``data`` with a ``width``-byte length in front."""
        self.int(len(data), width)
        self.parts.append(bytes(data))

    def array(self, values: np.ndarray) -> None:
        """A 1-D float array: u8 item size, u32 count, little-endian values."""
        v = np.ascontiguousarray(values, values.dtype.newbyteorder("<"))
        self.int(v.dtype.itemsize, 1)
        self.int(v.size, 4)
        self.parts.append(v.tobytes())

    def blob(self, raw: bytes | memoryview) -> None:
        """``raw`` compressed with zstandard; the frame records its size and a checksum of its
        content (XXH64), so a damaged frame is an error even where the sha256 was resealed."""
        frame = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True).compress(raw)
        self.int(len(raw), 8)
        self.bytes(frame, 8)

    def getvalue(self) -> bytes:
        return b"".join(self.parts)


class Cursor:
    """Bounded sequential reads over a payload; errors carry file offsets."""

    def __init__(self, view: memoryview, path: str, base: int, budget: int):
        self.view, self.path, self.base, self.budget = view, path, base, budget
        self.pos = 0

    @property
    def offset(self) -> int:
        """The file offset of the next byte."""
        return self.base + self.pos

    def remaining(self) -> int:
        return len(self.view) - self.pos

    def error(self, expected: str, got: str = "", at: int | None = None) -> KaldiFormatError:
        return KaldiFormatError(self.path, self.offset if at is None else at, expected, got)

    def take(self, n: int, what: str) -> memoryview:
        if n > self.remaining():
            raise self.error(f"{what} ({n} bytes)",
                             f"end of payload ({self.remaining()} bytes left)")
        out = self.view[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self, width: int, what: str, limit: int | None = None) -> int:
        at = self.offset
        value = struct.unpack(_INTS[width], self.take(width, what))[0]
        if limit is not None and value > limit:
            raise self.error(f"{what} at most {limit}", str(value), at=at)
        return value

    def bytes(self, what: str, width: int = 4) -> memoryview:
        return self.take(self.int(width, f"length of {what}", self.remaining()), what)

    def text(self, what: str) -> str:
        at = self.offset
        raw = bytes(self.bytes(what, 2))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.error(f"{what} (UTF-8)", show_bytes(raw), at=at) from None

    def array(self, what: str, max_count: int) -> np.ndarray:
        at = self.offset
        size = self.int(1, f"item size of {what}")
        if size not in (4, 8):
            raise self.error(f"item size of {what} (4 or 8)", str(size), at=at)
        count = self.int(4, f"length of {what}", min(max_count, self.remaining() // size))
        data = self.take(count * size, what)
        return np.frombuffer(data, dtype="<f4" if size == 4 else "<f8").copy()

    def blob(self, what: str) -> bytes:
        """A zstandard blob's raw bytes, its length checked before anything is allocated."""
        at = self.offset
        raw_len = self.int(8, f"raw length of {what}", self.budget)
        frame_at = self.offset + 8
        frame = self.bytes(what, 8)
        if raw_len > len(frame) * MAX_ZSTD_RATIO:
            raise self.error(f"raw length of {what} at most {MAX_ZSTD_RATIO}x its "
                             f"{len(frame)} compressed bytes", str(raw_len), at=at)
        try:
            declared = zstandard.frame_content_size(frame)
        except zstandard.ZstdError as e:
            raise self.error(f"a zstandard frame for {what}", str(e), at=frame_at) from None
        if declared != raw_len:
            raise self.error(f"a zstandard frame of {raw_len} bytes for {what}",
                             f"{declared} bytes", at=frame_at)
        try:
            raw = zstandard.ZstdDecompressor().decompress(frame, max_output_size=raw_len)
        except zstandard.ZstdError as e:
            raise self.error(f"a valid zstandard frame for {what}", str(e), at=frame_at) from None
        if len(raw) != raw_len:
            raise self.error(f"{raw_len} bytes from the frame of {what}", f"{len(raw)}",
                             at=frame_at)
        self.budget -= raw_len
        return raw

    def end(self) -> None:
        if self.remaining():
            raise self.error("end of payload", f"{self.remaining()} more bytes")
