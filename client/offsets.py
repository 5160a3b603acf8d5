"""Offset lookups by time or position (ListOffsets), shared by consumer and admin."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from protocol.errors import ApiError, NetworkError, RetriableError
from protocol.messages import ListOffsetsPartition, ListOffsetsRequest

from .cluster import Cluster
from .errors import FerryTimeoutError, NoBrokersAvailable
from .structs import TopicPartition


async def list_offsets(
    cluster: Cluster,
    timestamps: dict[TopicPartition, int],
    timeout: float,
    retry_backoff: float = 0.1,
) -> dict[TopicPartition, tuple[int, int]]:
    """{tp: (offset, timestamp)} for {tp: EARLIEST | LATEST | ms since the epoch}.

    For a time, the offset is the first record's at or after it, -1 if none is.
    Asks each partition's leader; retries retriable errors and unknown leaders
    until ``timeout`` seconds, then raises FerryTimeoutError. Raises the
    ApiError of a non-retriable error (e.g. UnknownTopicOrPartitionError is
    retried, InvalidTopicError is not).
    """
    deadline = time.monotonic() + timeout
    result: dict[TopicPartition, tuple[int, int]] = {}
    todo = {TopicPartition(*tp): ts for tp, ts in timestamps.items()}
    last: BaseException | None = None
    first = True
    while todo:
        meta = cluster.metadata
        by_node: dict[int, list] = defaultdict(list)
        missing = set()
        leaderless = errors = False
        for tp, ts in todo.items():
            leader = meta.leader_for(tp.topic, tp.partition)
            if leader is None:
                missing.add(tp.topic)
                leaderless = True
            else:
                by_node[leader].append(ListOffsetsPartition(tp.topic, tp.partition, ts))
        for node, parts in by_node.items():
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    resp = await cluster.send(node, ListOffsetsRequest(partitions=tuple(parts)))
            except TimeoutError:
                break
            except (NetworkError, NoBrokersAvailable, RetriableError) as exc:
                last = exc
                errors = True
                continue
            for p in resp.partitions:
                tp = TopicPartition(p.topic, p.partition)
                if tp not in todo:
                    continue
                if p.error_code:
                    cls = ApiError.for_code(p.error_code)
                    exc = cls(f"{tp.topic}/{tp.partition}: {cls.description}")
                    if not cls.retriable:
                        raise exc
                    last = exc
                    errors = True
                    missing.add(tp.topic)
                    continue
                result[tp] = (p.offset, p.timestamp)
                del todo[tp]
        if not todo:
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            names = ", ".join(f"{tp.topic}/{tp.partition}" for tp in todo)
            why = f": {last}" if last else ": no leader known"
            raise FerryTimeoutError(
                f"could not list offsets of {names} within {timeout * 1000:.0f} ms{why}"
            )
        if not (first and leaderless and not errors):
            await asyncio.sleep(min(retry_backoff, remaining))
        # else the first try only lacked metadata: refresh it at once, no back-off
        first = False
        if missing:
            cluster.tracked |= missing
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await cluster.refresh(cluster.tracked)
            except TimeoutError:
                pass
            except (NetworkError, NoBrokersAvailable, RetriableError) as exc:
                last = exc
    return result

