"""Compressed frames that are small on the wire and huge once decoded, made as a faulty or hostile sender makes them:
a real PNG of one colour (every row filtered and deflated like any PNG), so a decoder that trusts it does the work."""

from __future__ import annotations

import functools
import struct
import zlib


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@functools.lru_cache(maxsize=2)
def png_bomb(side: int) -> bytes:
    """A valid ``side`` x ``side`` RGB PNG of black pixels: about side^2 / 1000 bytes, 3 * side^2 bytes decoded
    (10000: 0.3 MB on the wire, 300 MB decoded)."""
    row = b"\x00" + bytes(3 * side)  # filter type 0, then the row's pixels
    deflate = zlib.compressobj(9)
    idat = b"".join(deflate.compress(row) for _ in range(side)) + deflate.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
