"""Choosing a partition: Kafka's murmur2 for keys, sticky batches for keyless records.

``murmur2`` is bit-for-bit Kafka's ``Utils.murmur2`` (seed 0x9747b28c), so a
key lands on the same partition number as with the Java client, kafka-python
or aiokafka: ``(murmur2(key) & 0x7fffffff) % num_partitions``.

Keyless records use Kafka's sticky partitioning: every keyless record of a
topic goes to one partition until a batch for it is sealed, then the topic
sticks to another partition chosen at random. Batches fill up instead of
spreading thin over every partition.
"""

from __future__ import annotations

import random
import struct

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's 32-bit murmur2 of ``data``, as the signed int Java returns."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    n4 = length >> 2
    if n4:
        for k in struct.unpack_from(f"<{n4}I", data):
            k = (k * _M) & _MASK
            k ^= k >> 24
            k = (k * _M) & _MASK
            h = ((h * _M) & _MASK) ^ k
    tail = length & 3
    if tail:
        base = n4 << 2
        if tail == 3:
            h ^= data[base + 2] << 16
        if tail >= 2:
            h ^= data[base + 1] << 8
        h ^= data[base]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - 0x100000000 if h & 0x80000000 else h


_hash_cache: dict[bytes, int] = {}
_CACHE_MAX = 65536
_CACHE_KEY_MAX = 64


def partition_for_key(key: bytes, num_partitions: int) -> int:
    """The default partitioner: ``(murmur2(key) & 0x7fffffff) % num_partitions``.

    Hashes of short keys are cached, since real keys (user ids, order ids) repeat.
    """
    h = _hash_cache.get(key)
    if h is None:
        h = murmur2(key) & 0x7FFFFFFF
        if len(key) <= _CACHE_KEY_MAX:
            if len(_hash_cache) >= _CACHE_MAX:
                _hash_cache.clear()
            _hash_cache[bytes(key)] = h
    return h % num_partitions


class StickyPartitioner:
    """Per-topic sticky choice for keyless records. Not locked: a race only moves
    a record to the neighbouring batch, which is harmless."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._current: dict[str, int] = {}

    def partition(self, topic: str, num_partitions: int) -> int:
        """The topic's current sticky partition (choosing one the first time)."""
        p = self._current.get(topic)
        if p is None or p >= num_partitions:
            p = self._current[topic] = self._rng.randrange(num_partitions)
        return p

    def batch_sealed(self, topic: str, partition: int, num_partitions: int) -> None:
        """A batch of ``topic``/``partition`` was sealed: move on if it was the sticky one."""
        if self._current.get(topic) != partition:
            return
        if num_partitions <= 1:
            return
        p = self._rng.randrange(num_partitions - 1)
        self._current[topic] = p + 1 if p >= partition else p
