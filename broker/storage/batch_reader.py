"""Reading record batches back out of a segment file with ``os.pread``.

Theory of operation
-------------------
A segment's ``.log`` is record batches back to back, exactly as producers sent
them with the broker's offsets (and append times) patched in; see
``protocol.batch`` for the batch layout. There is no other framing: the
``batch_length`` field of each header leads to the next batch.

Two walks over that chain exist:

* ``iter_headers`` reads only the 65-byte headers (one pread each). Lookups
  use it for the few batches between an index entry and the target, so
  serving a read never touches the payloads.
* ``verified_batches`` is the recovery walk: it checks every batch's header,
  bounds, offset chaining and CRC, and stops at the first that fails, which is
  where the log is cut. It reads the file in 1 MiB chunks; a batch larger
  than ``IN_MEMORY_LIMIT`` has its CRC computed chunk by chunk instead, so a
  garbage length can never make it allocate more than that, and a valid batch
  is never refused for being large (``max.message.bytes`` may have been
  lowered since it was written).
"""

from __future__ import annotations

import os
from typing import Iterator

import crc32c as _crc32c

from protocol.batch import CRC_START, HEADER_SIZE, NO_TIMESTAMP, BatchHeader, parse_header, verify
from protocol.errors import CorruptMessageError

CHUNK = 1 << 20
IN_MEMORY_LIMIT = 8 << 20
MAX_RELATIVE_OFFSET = (1 << 32) - 1


def batch_timestamp(header: BatchHeader) -> int:
    """The timestamp a batch is indexed by: its append time if stamped, else its max timestamp."""
    if header.log_append_time != NO_TIMESTAMP:
        return header.log_append_time
    return header.max_timestamp


def read_header(fd: int, position: int, end: int) -> BatchHeader:
    """The header of the batch at ``position``, which must end by ``end``.

    Raises CorruptMessageError if the header is short, invalid, or the batch
    runs past ``end``.
    """
    if end - position < HEADER_SIZE:
        raise CorruptMessageError(f"partial batch header at position {position}")
    raw = os.pread(fd, HEADER_SIZE, position)
    header = parse_header(raw)
    if position + header.size > end:
        raise CorruptMessageError(f"batch at position {position} runs past the end of the segment")
    return header


def iter_headers(fd: int, start: int, end: int) -> Iterator[tuple[int, BatchHeader]]:
    """(position, header) of each batch in ``[start, end)``; headers only, no CRC.

    ``start`` must be a batch boundary. Raises CorruptMessageError on an
    invalid header or a batch that does not end by ``end``.
    """
    pos = start
    while pos < end:
        header = read_header(fd, pos, end)
        yield pos, header
        pos += header.size


def verified_batches(
    fd: int, start: int, end: int, first_offset: int, max_offset: int
) -> Iterator[tuple[int, BatchHeader]]:
    """(position, header) of each valid batch from ``start``; stops at the first invalid one.

    Valid means: a sane header, the whole batch before ``end``, a matching
    CRC, and the base offset the chain expects: ``first_offset`` for the first
    batch, then the previous batch's next offset, never above ``max_offset``.
    The CRC does not cover the base offset, so this chaining is what catches
    a damaged one. Compaction keeps this true inside a segment: a cleaned
    batch that follows removed ones starts where they started (see
    ``cleaner``), so gaps only ever fall between segments. The caller finds
    where the valid prefix ends from the last batch yielded. Raises OSError only.
    """
    pos = start
    expected = first_offset
    chunk = b""
    chunk_pos = start

    def view(position: int, length: int) -> memoryview:
        nonlocal chunk, chunk_pos
        if not (chunk_pos <= position and position + length <= chunk_pos + len(chunk)):
            chunk = os.pread(fd, max(length, min(CHUNK, end - position)), position)
            chunk_pos = position
        offset = position - chunk_pos
        return memoryview(chunk)[offset : offset + length]

    while end - pos >= HEADER_SIZE:
        try:
            header = parse_header(view(pos, HEADER_SIZE))
        except CorruptMessageError:
            return
        size = header.size
        if pos + size > end or header.base_offset != expected or header.base_offset > max_offset:
            return
        if size <= IN_MEMORY_LIMIT:
            try:
                verify(view(pos, size))
            except CorruptMessageError:
                return
        elif not _crc_matches(fd, pos, size, header.crc):
            return
        yield pos, header
        expected = header.next_offset
        pos += size


def _crc_matches(fd: int, pos: int, size: int, crc: int) -> bool:
    value = 0
    at = pos + CRC_START
    stop = pos + size
    while at < stop:
        data = os.pread(fd, min(CHUNK, stop - at), at)
        if not data:
            return False
        value = _crc32c.crc32c(data, value=value)
        at += len(data)
    return value == crc
