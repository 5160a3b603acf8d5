"""Record batches: the unit the client builds, the broker stores and the consumer reads.

Theory of operation
-------------------
A batch is a fixed 65-byte header followed by a payload. The broker only ever
looks at the header: it checks the length and the CRC, writes the base offset
(and, for topics with ``message_timestamp_type=LogAppendTime``, the append
time) into the two fields that sit *before* the CRC, and stores the bytes as
they came. Assigning offsets therefore never means recomputing a checksum, and
the same bytes go from the producer's socket to the segment file and from the
segment file (by ``os.sendfile``) to every consumer.

Header layout (all integers big-endian)::

    offset size field              notes
    0      8    base_offset        int64, patched by the broker
    8      4    batch_length       int32, bytes after this field (total = 12 + batch_length)
    12     8    log_append_time    int64, patched by the broker; -1 = not stamped
    20     4    crc                uint32, CRC32C (Castagnoli) of bytes [24, end)
    24     1    magic              int8, = 1
    25     2    attributes         int16: bits 0-2 codec (0 none, 1 gzip, 3 lz4, 4 zstd),
                                   bit 3 timestamp type (0 create, 1 log append),
                                   bit 4 transactional, bit 5 control
    27     4    last_offset_delta  int32, offset of the last record minus base_offset
    31     4    record_count       int32
    35     8    first_timestamp    int64, ms since the epoch
    43     8    max_timestamp      int64
    51     8    producer_id        int64, -1 = not idempotent
    59     2    producer_epoch     int16, -1
    61     4    base_sequence      int32, -1
    65     ...  payload

The payload is one msgpack array of five *columns*, optionally compressed as a
whole with the codec in the attributes::

    [keys, values, timestamp_deltas, headers, offset_deltas]

``values`` is an array of bin-or-nil, one per record. Each other column is
either nil, meaning "every record has the default" (no key, delta 0, no
headers, consecutive offsets), or an array of the same length: keys of
bin-or-nil, integer timestamp deltas from ``first_timestamp``, headers as
arrays of ``[str, bin-or-nil]`` pairs, and integer offset deltas from
``base_offset`` (present only after compaction removed records). Because the
columns are flat arrays, decoding a batch is one ``msgpack.unpackb`` call: no
per-record Python loop.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
import threading
from itertools import repeat
from operator import add as _add
from typing import Iterator, Sequence

import crc32c as _crc32c
import msgpack

from .compression import Compression, compress, decompress
from .errors import CorruptMessageError

MAGIC = 1
HEADER = struct.Struct(">qiqIbhiiqqqhi")
HEADER_SIZE = HEADER.size  # 65
LOG_OVERHEAD = 12  # base_offset + batch_length: what precedes the length-counted bytes
CRC_START = 24
_PREFIX = struct.Struct(">qi")  # base_offset, batch_length
_OFFSET_FIELD = struct.Struct(">q")
_TAIL = struct.Struct(">iiqq")  # last_offset_delta, record_count, first_ts, max_ts at 27
_PRODUCER = struct.Struct(">qhi")  # producer_id, producer_epoch, base_sequence at 51

COMPRESSION_MASK = 0x07
TIMESTAMP_TYPE_BIT = 0x08
TRANSACTIONAL_BIT = 0x10
CONTROL_BIT = 0x20

NO_TIMESTAMP = -1
DEFAULT_MAX_UNCOMPRESSED = 64 * 1024 * 1024


def crc32c(data, value: int = 0) -> int:
    """CRC32C (Castagnoli) of ``data`` (any bytes-like object), continuing from
    ``value`` (the CRC of what precedes it)."""
    return _crc32c.crc32c(data, value)


class TimestampType(enum.IntEnum):
    CREATE_TIME = 0
    LOG_APPEND_TIME = 1


@dataclasses.dataclass(frozen=True, slots=True)
class BatchHeader:
    base_offset: int
    batch_length: int
    log_append_time: int
    crc: int
    magic: int
    attributes: int
    last_offset_delta: int
    record_count: int
    first_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int

    @property
    def size(self) -> int:
        """Bytes the whole batch occupies."""
        return LOG_OVERHEAD + self.batch_length

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def compression(self) -> Compression:
        return Compression(self.attributes & COMPRESSION_MASK)

    @property
    def timestamp_type(self) -> TimestampType:
        return TimestampType(1 if self.attributes & TIMESTAMP_TYPE_BIT else 0)

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_BIT)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_BIT)

    @property
    def last_sequence(self) -> int:
        if self.base_sequence < 0:
            return -1
        return (self.base_sequence + self.last_offset_delta) & 0x7FFFFFFF


@dataclasses.dataclass(frozen=True, slots=True)
class DecodedBatch:
    """A batch's header and its record columns (lists of equal length)."""

    header: BatchHeader
    offsets: Sequence[int]
    timestamps: Sequence[int]
    keys: Sequence[bytes | None]
    values: Sequence[bytes | None]
    headers: Sequence[list]

    def __len__(self) -> int:
        return len(self.values)

    def records(self) -> Iterator[tuple]:
        """(offset, timestamp, key, value, headers) per record."""
        return zip(self.offsets, self.timestamps, self.keys, self.values, self.headers)


def parse_header(buf, pos: int = 0) -> BatchHeader:
    """Parse the header at ``buf[pos:]``. Raises CorruptMessageError if short or invalid.

    Does not verify the CRC: see ``verify``.
    """
    if len(buf) - pos < HEADER_SIZE:
        raise CorruptMessageError("record batch shorter than its header")
    header = BatchHeader(*HEADER.unpack_from(buf, pos))
    _check_header(header)
    return header


def _check_header(h: BatchHeader) -> None:
    if h.magic != MAGIC:
        raise CorruptMessageError(f"unknown batch magic {h.magic}")
    if h.batch_length < HEADER_SIZE - LOG_OVERHEAD:
        raise CorruptMessageError(f"batch length {h.batch_length} below the header size")
    if h.record_count < 0 or h.last_offset_delta < h.record_count - 1 or h.last_offset_delta < 0:
        raise CorruptMessageError("batch record count and offset delta disagree")
    if (h.attributes & COMPRESSION_MASK) not in (0, 1, 3, 4):
        raise CorruptMessageError(f"unknown codec {h.attributes & COMPRESSION_MASK}")


def peek_prefix(buf, pos: int = 0) -> tuple[int, int]:
    """(base_offset, total_size) of the batch at ``pos``; no validation."""
    base, length = _PREFIX.unpack_from(buf, pos)
    return base, LOG_OVERHEAD + length


def verify(buf, pos: int = 0, max_size: int | None = None) -> BatchHeader:
    """Parse and CRC-check the batch at ``buf[pos:]``; returns its header.

    Raises CorruptMessageError if the header is invalid, the batch runs past the
    buffer or ``max_size``, or the CRC does not match.
    """
    header = parse_header(buf, pos)
    end = pos + header.size
    if end > len(buf):
        raise CorruptMessageError("record batch is truncated")
    if max_size is not None and header.size > max_size:
        raise CorruptMessageError("record batch is larger than allowed")
    if crc32c(memoryview(buf)[pos + CRC_START : end]) != header.crc:
        raise CorruptMessageError("record batch CRC mismatch")
    return header


def split_batches(buf, max_batch_size: int | None = None) -> list[tuple[int, BatchHeader]]:
    """Verify every batch in ``buf`` (which must hold whole batches only).

    Returns [(position, header)]. Raises CorruptMessageError on any bad batch,
    a trailing partial batch, or an empty buffer.
    """
    out = []
    pos = 0
    n = len(buf)
    if n == 0:
        raise CorruptMessageError("no record batch in the data")
    while pos < n:
        header = verify(buf, pos, max_batch_size)
        out.append((pos, header))
        pos += header.size
    return out


def iter_complete(buf) -> Iterator[tuple[int, int]]:
    """(position, size) of each complete batch in ``buf``; stops at a partial tail.

    Fetch responses may end with a partial batch (the byte limit cut it); this
    skips it as Kafka's consumers do. No CRC check here.
    """
    pos = 0
    n = len(buf)
    while n - pos >= LOG_OVERHEAD:
        _, size = peek_prefix(buf, pos)
        if size < HEADER_SIZE or pos + size > n:
            return
        yield pos, size
        pos += size


def patch_base_offset(buf: bytearray | memoryview, pos: int, base_offset: int) -> None:
    """Write ``base_offset`` into the batch at ``pos`` (outside the CRC)."""
    _OFFSET_FIELD.pack_into(buf, pos, base_offset)


def patch_log_append_time(buf: bytearray | memoryview, pos: int, timestamp: int) -> None:
    """Write the broker's append time into the batch at ``pos`` (outside the CRC)."""
    _OFFSET_FIELD.pack_into(buf, pos + 12, timestamp)


_packers = threading.local()
_PACKER_KEEP = 4 << 20  # a packer whose buffer grew past this is not kept


def encode_payload(keys, values, ts_deltas, headers, offset_deltas=None) -> bytes:
    """msgpack the five columns; pass None for a column that is all defaults."""
    # A Packer per thread, kept: msgpack.packb makes a new one per call, whose
    # fresh buffer (grown by reallocation, on new pages) cost a 256 KiB batch
    # three times the packing itself.
    packer = getattr(_packers, "packer", None)
    if packer is None:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    try:
        out = packer.pack([keys, values, ts_deltas, headers, offset_deltas])
    except BaseException:
        _packers.packer = None  # its buffer may hold a partial object
        raise
    if len(out) > _PACKER_KEEP:
        _packers.packer = None
    return out


def compress_payload(codec: "Compression | int", payload: bytes) -> bytes:
    """``payload`` compressed with ``codec``, ready for ``assemble``.

    Raises UnsupportedCompressionTypeError for an unknown codec.
    """
    return compress(Compression.parse(int(codec)), payload)


def build_batch(
    values: Sequence[bytes | None],
    keys: Sequence[bytes | None] | None = None,
    timestamps: Sequence[int] | int | None = None,
    headers: Sequence[Sequence[tuple[str, bytes | None]]] | None = None,
    *,
    offset_deltas: Sequence[int] | None = None,
    compression: "Compression | str | None" = Compression.NONE,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    base_offset: int = 0,
    timestamp_type: TimestampType = TimestampType.CREATE_TIME,
    transactional: bool = False,
    control: bool = False,
    now_ms: int | None = None,
) -> bytes:
    """Encode one batch. ``timestamps`` is one int for all records or one per record.

    ``keys`` and ``headers`` may be None (all records have none). With
    ``offset_deltas`` (compaction) the records keep their original offsets.
    Returns the bytes; raises ValueError if the columns disagree in length.
    """
    count = len(values)
    if count == 0:
        raise ValueError("a batch needs at least one record")
    if keys is not None and len(keys) != count:
        raise ValueError("keys and values differ in length")
    if headers is not None and len(headers) != count:
        raise ValueError("headers and values differ in length")
    if keys is not None and not any(k is not None for k in keys):
        keys = None
    if headers is not None:
        if any(headers):
            headers = [[list(h) for h in hs] if hs else None for hs in headers]
        else:
            headers = None
    if timestamps is None:
        if now_ms is None:
            import time

            now_ms = int(time.time() * 1000)
        timestamps = now_ms
    if isinstance(timestamps, int):
        first_ts = max_ts = timestamps
        ts_deltas = None
    else:
        if len(timestamps) != count:
            raise ValueError("timestamps and values differ in length")
        first_ts = timestamps[0]
        max_ts = max(timestamps)
        ts_deltas = [t - first_ts for t in timestamps]
        if not any(ts_deltas):
            ts_deltas = None
    if offset_deltas is not None:
        offset_deltas = list(offset_deltas)
        if len(offset_deltas) != count:
            raise ValueError("offset_deltas and values differ in length")
        last_delta = offset_deltas[-1]
        if offset_deltas == list(range(count)):
            offset_deltas = None
    else:
        last_delta = count - 1
    codec = Compression.parse(compression) if not isinstance(compression, Compression) else compression
    payload = compress(
        codec, encode_payload(keys, list(values), ts_deltas, headers, offset_deltas)
    )
    attributes = int(codec)
    if timestamp_type == TimestampType.LOG_APPEND_TIME:
        attributes |= TIMESTAMP_TYPE_BIT
    if transactional:
        attributes |= TRANSACTIONAL_BIT
    if control:
        attributes |= CONTROL_BIT
    return assemble(
        payload,
        attributes=attributes,
        last_offset_delta=last_delta,
        record_count=count,
        first_timestamp=first_ts,
        max_timestamp=max_ts,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        base_offset=base_offset,
    )


def assemble(
    payload: bytes,
    *,
    attributes: int,
    last_offset_delta: int,
    record_count: int,
    first_timestamp: int,
    max_timestamp: int,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    base_offset: int = 0,
    log_append_time: int = NO_TIMESTAMP,
) -> bytes:
    """Prefix an already encoded (and compressed) payload with its header and CRC."""
    header = bytearray(HEADER_SIZE)
    HEADER.pack_into(
        header, 0, base_offset, HEADER_SIZE - LOG_OVERHEAD + len(payload), log_append_time, 0,
        MAGIC, attributes, last_offset_delta, record_count, first_timestamp, max_timestamp,
        producer_id, producer_epoch, base_sequence,
    )
    crc = crc32c(payload, crc32c(memoryview(header)[CRC_START:]))
    struct.pack_into(">I", header, 20, crc)
    return b"".join((header, payload))  # the payload's one copy


def decode_payload(buf, pos: int, header: BatchHeader, max_uncompressed: int) -> list:
    """Decompress and unpack the five payload columns of a verified batch.

    Returns [keys, values, timestamp_deltas, headers, offset_deltas]. Raises
    CorruptMessageError if the payload does not decompress within
    ``max_uncompressed`` bytes or is not the five-column array described above.
    """
    raw = memoryview(buf)[pos + HEADER_SIZE : pos + header.size]
    codec = header.attributes & COMPRESSION_MASK
    if codec:
        raw = decompress(codec, raw, max_uncompressed)
    try:
        cols = msgpack.unpackb(raw, use_list=True, raw=False, strict_map_key=True)
    except Exception as exc:
        raise CorruptMessageError(f"cannot unpack batch payload: {exc}") from None
    if not isinstance(cols, list) or len(cols) != 5 or not isinstance(cols[1], list):
        raise CorruptMessageError("batch payload is not the five-column array")
    n = len(cols[1])
    if n != header.record_count:
        raise CorruptMessageError("batch record count disagrees with its payload")
    for col in (cols[0], cols[2], cols[3], cols[4]):
        if col is not None and (not isinstance(col, list) or len(col) != n):
            raise CorruptMessageError("batch payload columns differ in length")
    # Element types, checked a column at a time (map(type) runs in C); the
    # pairs inside each record's headers are checked where decode() builds them.
    keys, values, ts_deltas, hdrs, offset_deltas = cols
    if not (
        _only(values, _BIN_OR_NIL)
        and (keys is None or _only(keys, _BIN_OR_NIL))
        and (ts_deltas is None or _only(ts_deltas, _INT))
        and (hdrs is None or _only(hdrs, _LIST_OR_NIL))
        and (offset_deltas is None or _only(offset_deltas, _INT))
    ):
        raise CorruptMessageError("batch payload column holds a value of the wrong type")
    return cols


_BIN_OR_NIL = frozenset((bytes, type(None)))
_INT = frozenset((int,))
_LIST_OR_NIL = frozenset((list, type(None)))


def _only(column: list, types: frozenset) -> bool:
    return types.issuperset(map(type, column))


def _record_headers(pairs) -> Sequence[tuple]:
    """One record's headers as (key, value) tuples; raises CorruptMessageError."""
    if not pairs:
        return ()
    out = []
    for p in pairs:
        if type(p) is not list or len(p) != 2 or type(p[0]) is not str or (
            p[1] is not None and type(p[1]) is not bytes
        ):
            raise CorruptMessageError("record header is not a [str, bin-or-nil] pair")
        out.append((p[0], p[1]))
    return out


def decode(
    buf, pos: int = 0, *, check_crc: bool = True, max_uncompressed: int = DEFAULT_MAX_UNCOMPRESSED
) -> DecodedBatch:
    """Decode the batch at ``buf[pos:]`` into record columns.

    Raises CorruptMessageError for any malformed, truncated or corrupt batch.
    Timestamps are the broker's append time when the batch was stamped.
    """
    header = verify(buf, pos) if check_crc else parse_header(buf, pos)
    if not check_crc and pos + header.size > len(buf):
        raise CorruptMessageError("record batch is truncated")
    keys, values, ts_deltas, hdrs, offset_deltas = decode_payload(buf, pos, header, max_uncompressed)
    n = len(values)
    base = header.base_offset
    if offset_deltas is None:
        offsets: Sequence[int] = range(base, base + n)
    else:
        offsets = list(map(_add, repeat(base), offset_deltas))
    if header.log_append_time != NO_TIMESTAMP:
        timestamps: Sequence[int] = [header.log_append_time] * n
    elif ts_deltas is None:
        timestamps = [header.first_timestamp] * n
    else:
        timestamps = list(map(_add, repeat(header.first_timestamp), ts_deltas))
    if hdrs is None:
        hdr_col: Sequence = [()] * n
    else:
        hdr_col = [_record_headers(h) for h in hdrs]
    return DecodedBatch(
        header=header,
        offsets=offsets,
        timestamps=timestamps,
        keys=keys if keys is not None else [None] * n,
        values=values,
        headers=hdr_col,
    )
