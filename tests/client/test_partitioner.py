import random

import pytest

from client.partitioner import StickyPartitioner, murmur2, partition_for_key

# Apache Kafka's UtilsTest.testMurmur2: Java's signed results.
KAFKA_VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]

# One per tail length, from the Java implementation too.
SHORT_VECTORS = [
    (b"1", -1993445489),
    (b"12", 126087238),
    (b"123", -267702483),
    (b"1234", -1614185708),
    (b"12345", -1188365604),
]

# kafka-python's test_murmur2_java_compatibility: partition out of 1000.
PARTITION_VECTORS = [
    (b"", 681),
    (b"a", 524),
    (b"ab", 434),
    (b"abc", 107),
    (b"123456789", 566),
    (b"\x00 ", 742),
]


@pytest.mark.parametrize("data,expected", KAFKA_VECTORS + SHORT_VECTORS)
def test_murmur2_matches_kafka(data, expected):
    assert murmur2(data) == expected


@pytest.mark.parametrize("data,expected", PARTITION_VECTORS)
def test_default_partitioner_matches_java_client(data, expected):
    assert partition_for_key(data, 1000) == expected


def test_murmur2_accepts_any_bytes_like():
    data = bytes(range(256)) * 3
    assert murmur2(bytearray(data)) == murmur2(data) == murmur2(memoryview(data))
    assert -(2**31) <= murmur2(data) < 2**31


def test_partition_for_key_is_stable_and_in_range():
    for i in range(200):
        key = b"user-%d" % i
        p = partition_for_key(key, 7)
        assert 0 <= p < 7
        assert partition_for_key(key, 7) == p == (murmur2(key) & 0x7FFFFFFF) % 7


def test_sticky_partitioner_sticks_until_a_batch_is_sealed():
    sticky = StickyPartitioner(random.Random(1))
    first = sticky.partition("t", 4)
    assert all(sticky.partition("t", 4) == first for _ in range(50))
    sticky.batch_sealed("t", (first + 1) % 4, 4)  # another partition's batch: no move
    assert sticky.partition("t", 4) == first
    seen = {first}
    current = first
    for _ in range(40):
        sticky.batch_sealed("t", current, 4)
        nxt = sticky.partition("t", 4)
        assert nxt != current
        seen.add(nxt)
        current = nxt
    assert seen == {0, 1, 2, 3}


def test_sticky_partitioner_single_partition_and_per_topic():
    sticky = StickyPartitioner(random.Random(2))
    assert sticky.partition("one", 1) == 0
    sticky.batch_sealed("one", 0, 1)
    assert sticky.partition("one", 1) == 0
    a = sticky.partition("a", 100)
    sticky.partition("b", 100)
    sticky.batch_sealed("b", sticky.partition("b", 100), 100)
    assert sticky.partition("a", 100) == a


def test_sticky_partitioner_rechooses_when_partitions_shrink():
    sticky = StickyPartitioner(random.Random(3))
    sticky._current["t"] = 9
    assert sticky.partition("t", 3) in range(3)
