"""Batch payload compression: gzip, lz4 and zstd, with bounded decompression.

A batch's payload (the msgpack columns) is compressed as a whole; the codec
is in bits 0-2 of the batch attributes. Decompressing a batch never
allocates much more than the caller's limit, whatever the batch claims: a
decompression bomb costs at most one step of output past the limit.
"""

from __future__ import annotations

import enum
import zlib

from .errors import CorruptMessageError, UnsupportedCompressionTypeError


class Compression(enum.IntEnum):
    NONE = 0
    GZIP = 1
    LZ4 = 3
    ZSTD = 4

    @classmethod
    def parse(cls, name: "str | int | Compression | None") -> "Compression":
        """Accepts None, 'none', 'gzip', 'lz4', 'zstd' or a codec number."""
        if name is None:
            return cls.NONE
        if isinstance(name, int):
            try:
                return cls(name)
            except ValueError:
                raise UnsupportedCompressionTypeError(f"unknown codec {name}") from None
        try:
            return cls[name.upper()]
        except KeyError:
            raise UnsupportedCompressionTypeError(
                f"unknown compression type {name!r}: use none, gzip, lz4 or zstd"
            ) from None


def compress(codec: Compression, data: bytes) -> bytes:
    if codec is Compression.NONE:
        return data
    if codec is Compression.GZIP:
        c = zlib.compressobj(6, zlib.DEFLATED, 31)
        return c.compress(data) + c.flush()
    if codec is Compression.LZ4:
        import lz4.frame

        return lz4.frame.compress(data)
    if codec is Compression.ZSTD:
        import zstandard

        return zstandard.ZstdCompressor(level=3).compress(data)
    raise UnsupportedCompressionTypeError(f"codec {codec}")


_CHUNK = 256 * 1024  # output per decompression step: the most a bomb costs us


def decompress(codec: int, data, limit: int) -> bytes:
    """The decompressed payload. Raises CorruptMessageError if it is truncated,
    invalid, or longer than ``limit`` bytes; never allocates much past ``limit``.
    """
    try:
        if codec == Compression.GZIP:
            d = zlib.decompressobj(31)
            out = d.decompress(data, limit)
            if d.unconsumed_tail:
                raise CorruptMessageError("decompressed batch exceeds the size limit")
            if not d.eof:  # also catches a missing trailer, whose CRC we never saw
                raise CorruptMessageError("gzip payload truncated or exceeds the size limit")
            return out
        if codec == Compression.LZ4:
            return _lz4_decompress(data, limit)
        if codec == Compression.ZSTD:
            return _zstd_decompress(data, limit)
    except CorruptMessageError:
        raise
    except Exception as exc:  # the codecs raise their own assorted errors
        raise CorruptMessageError(f"cannot decompress batch: {exc}") from None
    raise CorruptMessageError(f"unknown codec {codec}")


def _lz4_decompress(data, limit: int) -> bytes:
    import lz4.frame

    # In steps: given max_length the decompressor allocates all of it up front.
    d = lz4.frame.LZ4FrameDecompressor()
    chunks = [d.decompress(bytes(data), max_length=min(_CHUNK, limit + 1))]
    total = len(chunks[0])
    while not d.eof:
        if total > limit:
            raise CorruptMessageError("decompressed batch exceeds the size limit")
        if d.needs_input:
            raise CorruptMessageError("lz4 payload truncated")
        chunk = d.decompress(b"", max_length=min(_CHUNK, limit + 1 - total))
        chunks.append(chunk)
        total += len(chunk)
    if total > limit:
        raise CorruptMessageError("decompressed batch exceeds the size limit")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _zstd_decompress(data, limit: int) -> bytes:
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    size = zstandard.frame_content_size(data)  # -1: the frame does not say
    if size > limit:
        # decompress() would allocate the declared size whatever max_output_size says.
        raise CorruptMessageError("decompressed batch exceeds the size limit")
    if size >= 0:
        return dctx.decompress(data)  # zstd checks the output against the declared size
    reader = dctx.stream_reader(data)
    chunks = []
    total = 0
    while chunk := reader.read(min(_CHUNK, limit + 1 - total)):
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise CorruptMessageError("decompressed batch exceeds the size limit")
    return b"".join(chunks)
