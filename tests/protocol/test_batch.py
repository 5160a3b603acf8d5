"""Record batches: round trips, broker-side patching, and corruption of every kind."""

from __future__ import annotations

import struct
import tracemalloc
import zlib

import lz4.frame
import msgpack
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import batch
from protocol.batch import Compression, TimestampType
from protocol.errors import CorruptMessageError, UnsupportedCompressionTypeError

MS = st.integers(min_value=-1, max_value=2**45)  # plausible ms timestamps, -1 = none
HEADER_PAIRS = st.lists(st.tuples(st.text(max_size=6), st.binary(max_size=6) | st.none()), max_size=3)


@st.composite
def batch_args(draw, max_records: int = 12):
    """Keyword arguments for build_batch, and what decode should give back."""
    n = draw(st.integers(min_value=1, max_value=max_records))
    values = draw(st.lists(st.binary(max_size=40) | st.none(), min_size=n, max_size=n))
    keys = draw(st.none() | st.lists(st.binary(max_size=10) | st.none(), min_size=n, max_size=n))
    headers = draw(st.none() | st.lists(HEADER_PAIRS, min_size=n, max_size=n))
    timestamps = draw(MS | st.lists(MS, min_size=n, max_size=n))
    offset_deltas = draw(st.none() | st.lists(st.integers(0, 10_000), min_size=n, max_size=n, unique=True).map(sorted))
    kwargs = dict(
        values=values,
        keys=keys,
        timestamps=timestamps,
        headers=headers,
        offset_deltas=offset_deltas,
        compression=draw(st.sampled_from(list(Compression))),
        producer_id=draw(st.integers(-1, 2**63 - 1)),
        producer_epoch=draw(st.integers(-1, 2**15 - 1)),
        base_sequence=draw(st.integers(-1, 2**31 - 1)),
        base_offset=draw(st.integers(0, 2**62)),
        timestamp_type=draw(st.sampled_from(list(TimestampType))),
        transactional=draw(st.booleans()),
        control=draw(st.booleans()),
    )
    return kwargs


def expected_records(kw):
    n = len(kw["values"])
    base = kw["base_offset"]
    offsets = [base + d for d in kw["offset_deltas"]] if kw["offset_deltas"] else list(range(base, base + n))
    ts = kw["timestamps"]
    timestamps = [ts] * n if isinstance(ts, int) else list(ts)
    keys = kw["keys"] or [None] * n
    headers = [tuple(tuple(p) for p in hs) for hs in kw["headers"]] if kw["headers"] else [()] * n
    return list(zip(offsets, timestamps, keys, kw["values"], headers))


def decoded_records(d):
    return [(o, t, k, v, tuple(tuple(p) for p in h)) for o, t, k, v, h in d.records()]


@st.composite
def small_batch(draw):
    kw = draw(batch_args(max_records=4))
    kw["compression"] = Compression.NONE
    return batch.build_batch(**kw)


ROUNDTRIP = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@ROUNDTRIP
@given(batch_args())
def test_roundtrip(kw):
    raw = batch.build_batch(**kw)
    header = batch.verify(raw)
    assert header.size == len(raw)
    assert header.compression == kw["compression"]
    assert header.timestamp_type == kw["timestamp_type"]
    assert header.is_transactional == kw["transactional"]
    assert header.is_control == kw["control"]
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (
        kw["producer_id"], kw["producer_epoch"], kw["base_sequence"])
    assert header.record_count == len(kw["values"])
    assert header.base_offset == kw["base_offset"]
    assert header.log_append_time == batch.NO_TIMESTAMP
    expected = expected_records(kw)
    assert header.last_offset == expected[-1][0]
    assert header.next_offset == expected[-1][0] + 1
    assert header.first_timestamp == expected[0][1]
    assert header.max_timestamp == max(r[1] for r in expected)
    decoded = batch.decode(raw)
    assert len(decoded) == len(expected)
    assert decoded_records(decoded) == expected
    assert decoded_records(batch.decode(raw, check_crc=False)) == expected


@ROUNDTRIP
@given(batch_args(), st.integers(0, 2**62), st.integers(0, 2**45))
def test_patching_offsets_and_append_time_keeps_the_crc(kw, new_base, append_time):
    raw = bytearray(batch.build_batch(**kw))
    crc = batch.verify(raw).crc
    expected = expected_records(kw)
    batch.patch_base_offset(raw, 0, new_base)
    header = batch.verify(raw)
    assert header.crc == crc and header.base_offset == new_base
    shift = new_base - kw["base_offset"]
    assert [r[0] for r in batch.decode(raw).records()] == [r[0] + shift for r in expected]
    batch.patch_log_append_time(raw, 0, append_time)
    header = batch.verify(raw)
    assert header.crc == crc and header.log_append_time == append_time
    decoded = batch.decode(raw)
    assert list(decoded.timestamps) == [append_time] * len(expected)
    assert list(decoded.values) == kw["values"]


def test_patching_at_a_position_inside_a_larger_buffer():
    a = batch.build_batch([b"a"], now_ms=5)
    b = batch.build_batch([b"b", b"c"], now_ms=6)
    buf = bytearray(a + b)
    batch.patch_base_offset(buf, len(a), 100)
    batch.patch_log_append_time(buf, len(a), 999)
    (_, ha), (pos, hb) = batch.split_batches(buf)
    assert ha.base_offset == 0 and hb.base_offset == 100 and pos == len(a)
    d = batch.decode(buf, pos)
    assert list(d.offsets) == [100, 101] and list(d.timestamps) == [999, 999]
    assert batch.peek_prefix(buf, pos) == (100, len(b))


@settings(max_examples=300, deadline=None)
@given(small_batch(), st.data())
def test_any_byte_flip_from_the_crc_on_is_detected(raw, data):
    pos = data.draw(st.integers(min_value=batch.CRC_START - 4, max_value=len(raw) - 1), label="pos")
    xor = data.draw(st.integers(1, 255), label="xor")
    bad = bytearray(raw)
    bad[pos] ^= xor
    with pytest.raises(CorruptMessageError):
        batch.verify(bad)
    with pytest.raises(CorruptMessageError):
        batch.decode(bad)
    with pytest.raises(CorruptMessageError):
        batch.split_batches(bad)


@settings(max_examples=100, deadline=None)
@given(small_batch(), st.data())
def test_truncated_batches(raw, data):
    cut = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    for fn in (batch.verify, batch.decode, batch.split_batches):
        with pytest.raises(CorruptMessageError):
            fn(raw[:cut])
    with pytest.raises(CorruptMessageError):
        batch.decode(raw[:cut], check_crc=False)
    assert list(batch.iter_complete(raw[:cut])) == []


@settings(max_examples=100, deadline=None)
@given(st.lists(small_batch(), min_size=1, max_size=4), st.data())
def test_split_and_iterate_with_a_partial_tail(batches, data):
    whole = b"".join(batches)
    positions = [sum(len(b) for b in batches[:i]) for i in range(len(batches))]
    assert [(p, h.size) for p, h in batch.split_batches(whole)] == list(zip(positions, map(len, batches)))
    assert list(batch.iter_complete(whole)) == list(zip(positions, map(len, batches)))
    # Cut inside the last batch: iter_complete stops before it, split_batches refuses.
    cut = data.draw(st.integers(min_value=positions[-1], max_value=len(whole) - 1))
    assert list(batch.iter_complete(whole[:cut])) == list(zip(positions, map(len, batches)))[:-1]
    if cut > positions[-1]:
        with pytest.raises(CorruptMessageError):
            batch.split_batches(whole[:cut])


def test_split_batches_limits():
    raw = batch.build_batch([b"x" * 100], now_ms=0)
    with pytest.raises(CorruptMessageError):
        batch.split_batches(b"")
    with pytest.raises(CorruptMessageError):
        batch.split_batches(raw, max_batch_size=len(raw) - 1)
    assert len(batch.split_batches(raw, max_batch_size=len(raw))) == 1


def test_iter_complete_stops_at_an_impossible_length():
    raw = batch.build_batch([b"x"], now_ms=0)
    bogus = struct.pack(">qi", 0, -5) + b"\0" * 100
    assert list(batch.iter_complete(raw + bogus)) == [(0, len(raw))]


def test_bytes_before_the_crc_are_not_covered():
    """base_offset, batch_length's neighbours and log_append_time are the broker's to write."""
    raw = bytearray(batch.build_batch([b"x"], now_ms=0))
    raw[3] ^= 0xFF   # base_offset
    raw[15] ^= 0xFF  # log_append_time
    batch.verify(raw)


# ------------------------------------------------------------ malformed payloads


def _assembled(payload: bytes, *, codec: int = 0, count: int = 1, **kw) -> bytes:
    return batch.assemble(payload, attributes=codec, last_offset_delta=max(count - 1, 0),
                          record_count=count, first_timestamp=0, max_timestamp=0, **kw)


@pytest.mark.parametrize("payload", [
    b"",
    b"\xc1",
    msgpack.packb({"keys": None}),
    msgpack.packb([None, [b"v"], None, None]),                  # four columns
    msgpack.packb([None, [b"v"], None, None, None, None]),      # six
    msgpack.packb([None, None, None, None, None]),              # no values column
    msgpack.packb([None, [b"v", b"w"], None, None, None]),      # count disagrees with header
    msgpack.packb([[b"k", b"k"], [b"v"], None, None, None]),    # keys column too long
    msgpack.packb([None, [b"v"], 5, None, None]),               # column not an array
    msgpack.packb([None, [b"v"], None, None, None]) + b"\x00",  # trailing bytes
    msgpack.packb([None, [b"v"], ["1"], None, None]),           # timestamp delta not an int
    msgpack.packb([None, [b"v"], [1.5], None, None]),
    msgpack.packb([None, [b"v"], None, None, ["0"]]),           # offset delta not an int
    msgpack.packb([None, [b"v"], None, [5], None]),             # headers entry not an array
    msgpack.packb([None, [b"v"], None, [[["k"]]], None]),       # header not a pair
    msgpack.packb([None, [b"v"], None, [[[1, b"x"]]], None]),   # header key not a str
    msgpack.packb([None, [b"v"], None, [[["k", "x"]]], None]),  # header value not bin
    msgpack.packb([None, ["v"], None, None, None]),             # value str, not bin
    msgpack.packb([None, [5], None, None, None]),
    msgpack.packb([[5], [b"v"], None, None, None]),             # key not bin
    b"\xa2\xff\xfe",                                            # invalid utf-8 str
])
def test_payload_that_is_not_the_five_columns(payload):
    raw = _assembled(payload)
    batch.verify(raw)  # the CRC is fine: only decoding finds the problem
    with pytest.raises(CorruptMessageError):
        batch.decode(raw)


@pytest.mark.parametrize("codec", [Compression.GZIP, Compression.LZ4, Compression.ZSTD])
def test_garbage_compressed_payload(codec):
    with pytest.raises(CorruptMessageError):
        batch.decode(_assembled(b"this is not compressed", codec=int(codec)))


def test_unknown_codec_and_magic():
    raw = bytearray(_assembled(msgpack.packb([None, [b"v"], None, None, None]), codec=2))
    with pytest.raises(CorruptMessageError):
        batch.verify(raw)
    raw = bytearray(batch.build_batch([b"v"], now_ms=0))
    raw[24] = 2
    with pytest.raises(CorruptMessageError):
        batch.parse_header(raw)


@pytest.mark.parametrize("count, last_delta", [(-1, 0), (3, 1), (1, -1)])
def test_header_counts_that_disagree(count, last_delta):
    raw = batch.assemble(b"", attributes=0, last_offset_delta=last_delta, record_count=count,
                         first_timestamp=0, max_timestamp=0)
    with pytest.raises(CorruptMessageError):
        batch.verify(raw)


def test_batch_length_below_the_header():
    raw = bytearray(batch.build_batch([b"v"], now_ms=0))
    struct.pack_into(">i", raw, 8, 10)
    with pytest.raises(CorruptMessageError):
        batch.parse_header(raw)


def _bomb_payload(size: int) -> bytes:
    # A valid five-column payload, so only the size limit can stop it.
    return batch.encode_payload(None, [b"\0" * size], None, None)


def _gzip(data):
    c = zlib.compressobj(6, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def _zstd_streamed(data):
    c = zstandard.ZstdCompressor().compressobj()
    return c.compress(data) + c.flush()


COMPRESSORS = {
    "gzip": (Compression.GZIP, _gzip),
    "lz4": (Compression.LZ4, lz4.frame.compress),
    "zstd": (Compression.ZSTD, zstandard.ZstdCompressor().compress),
    "zstd-unsized": (Compression.ZSTD, zstandard.ZstdCompressor(write_content_size=False).compress),
    "zstd-stream": (Compression.ZSTD, _zstd_streamed),
}


@pytest.mark.parametrize("name", list(COMPRESSORS))
def test_decompression_bomb(name):
    codec, compress = COMPRESSORS[name]
    limit = 64 * 1024
    raw = _assembled(compress(_bomb_payload(4 * 1024 * 1024)), codec=int(codec))
    assert len(raw) < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(CorruptMessageError):
            batch.decode(raw, max_uncompressed=limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * 1024 * 1024, f"decoding the bomb allocated {peak} bytes"


@pytest.mark.parametrize("name", list(COMPRESSORS))
def test_payload_at_the_limit_decodes(name):
    codec, compress = COMPRESSORS[name]
    payload = _bomb_payload(60_000)
    raw = _assembled(compress(payload), codec=int(codec))
    assert batch.decode(raw, max_uncompressed=len(payload)).values == [b"\0" * 60_000]
    with pytest.raises(CorruptMessageError):
        batch.decode(raw, max_uncompressed=len(payload) - 1)


@pytest.mark.parametrize("name", ["zstd-unsized", "lz4", "gzip"])
def test_small_payload_does_not_allocate_the_limit(name):
    """Frames without a content size (other clients' streaming encoders) stay cheap."""
    codec, compress = COMPRESSORS[name]
    raw = _assembled(compress(_bomb_payload(100)), codec=int(codec))
    tracemalloc.start()
    try:
        batch.decode(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024


@pytest.mark.parametrize("name", ["gzip", "lz4", "zstd"])
def test_truncated_compressed_stream(name):
    codec, compress = COMPRESSORS[name]
    data = compress(batch.encode_payload(None, [bytes(range(256)) * 40], None, None))
    with pytest.raises(CorruptMessageError):
        batch.decode(_assembled(data[: len(data) - 6], codec=int(codec)))


# ------------------------------------------------------------ arbitrary input


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 20))
def test_random_bytes_raise_only_corrupt_message(data, pos):
    for kwargs in ({}, {"check_crc": False}):
        try:
            batch.decode(data, min(pos, len(data)), **kwargs)
        except CorruptMessageError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_after_a_valid_header(data):
    """Past the header only the payload decoder stands between garbage and the caller."""
    for codec in (0, 1, 3, 4):
        try:
            batch.decode(_assembled(data, codec=codec, count=1))
        except CorruptMessageError:
            pass


COLUMN_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=4) | st.binary(max_size=4),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(COLUMN_VALUES, min_size=5, max_size=5), st.integers(-1, 2**45))
def test_five_arrays_of_anything(columns, first_ts):
    """Columns of the right shape but arbitrary contents decode or raise CorruptMessageError."""
    n = len(columns[1]) if isinstance(columns[1], list) else 1
    raw = batch.assemble(msgpack.packb(columns), attributes=0, last_offset_delta=max(n - 1, 0),
                         record_count=n, first_timestamp=first_ts, max_timestamp=first_ts)
    try:
        d = batch.decode(raw)
    except CorruptMessageError:
        return
    for offset, ts, key, value, headers in d.records():
        assert type(offset) is int and type(ts) is int
        assert key is None or type(key) is bytes
        assert value is None or type(value) is bytes
        for k, v in headers:
            assert type(k) is str and (v is None or type(v) is bytes)


# ------------------------------------------------------------ build_batch arguments


def test_build_batch_argument_errors():
    with pytest.raises(ValueError):
        batch.build_batch([])
    with pytest.raises(ValueError):
        batch.build_batch([b"a"], keys=[b"k", b"k"])
    with pytest.raises(ValueError):
        batch.build_batch([b"a"], headers=[[], []])
    with pytest.raises(ValueError):
        batch.build_batch([b"a"], timestamps=[1, 2])
    with pytest.raises(ValueError):
        batch.build_batch([b"a"], offset_deltas=[0, 1])


def test_compression_parse():
    assert Compression.parse(None) is Compression.NONE
    assert Compression.parse("ZStd") is Compression.ZSTD
    assert Compression.parse(3) is Compression.LZ4
    assert batch.build_batch([b"a"], compression="gzip", now_ms=0)[25:27] == b"\x00\x01"
    with pytest.raises(UnsupportedCompressionTypeError):
        Compression.parse("snappy")
    with pytest.raises(UnsupportedCompressionTypeError):
        Compression.parse(2)


def test_header_layout_offsets():
    raw = batch.build_batch([b"a", b"b"], keys=[b"k", None], timestamps=[10, 30], base_offset=7,
                            producer_id=5, producer_epoch=2, base_sequence=9)
    assert batch.HEADER_SIZE == 65 and batch.CRC_START == 24
    (base, length, lat, crc, magic, attrs, lod, count, first, mx, pid, epoch, seq) = struct.unpack_from(
        ">qiqIbhiiqqqhi", raw)
    assert (base, length + 12, lat, magic, attrs, lod, count, first, mx, pid, epoch, seq) == (
        7, len(raw), -1, 1, 0, 1, 2, 10, 30, 5, 2, 9)
    import crc32c

    assert crc == crc32c.crc32c(raw[24:])
    assert msgpack.unpackb(raw[65:]) == [[b"k", None], [b"a", b"b"], [0, 20], None, None]


def test_a_failed_encoding_leaves_nothing_behind_for_the_next_batch():
    with pytest.raises(TypeError):
        batch.build_batch([b"ok", object()], now_ms=0)
    d = batch.decode(batch.build_batch([b"next"], now_ms=0))
    assert list(d.values) == [b"next"]


def test_batches_encoded_in_several_threads_stay_their_own():
    import threading

    results: dict[int, list] = {}

    def work(n: int) -> None:
        out = []
        for i in range(200):
            values = [b"%d-%d" % (n, i)] * (i % 7 + 1)
            out.append(list(batch.decode(batch.build_batch(values, now_ms=0)).values) == values)
        results[n] = out

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(all(v) for v in results.values()) and len(results) == 4
