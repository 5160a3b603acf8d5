"""AsyncConnection against small scripted servers speaking the real protocol."""

import asyncio
import time

import pytest

from client.conn import AsyncConnection
from client.errors import NoBrokersAvailable
from protocol.connection import NEED_DATA, Connection, ErrorResponse, Role
from protocol.errors import (
    ErrorCode,
    NetworkError,
    RequestTimedOutError,
    UnknownTopicOrPartitionError,
    UnsupportedVersionError,
)
from protocol.handshake import handshake_response
from protocol.messages import (
    HandshakeResponse,
    MetadataRequest,
    MetadataResponse,
    ProducePartition,
    ProduceRequest,
    TopicMetadata,
)

from .helpers import refused_port, run

pytestmark = pytest.mark.timeout(30)


class Scripted:
    """A one-connection-at-a-time server running ``script(events, send, writer)``."""

    def __init__(self, script, *, handshake: bool = True) -> None:
        self.script = script
        self.handshake = handshake
        self.server = None
        self.port = 0

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()

    async def _serve(self, reader, writer):
        conn = Connection(Role.SERVER)

        async def events():
            while True:
                ev = conn.next_event()
                if ev is not NEED_DATA:
                    yield ev
                    continue
                data = await reader.read(65536)
                conn.receive_data(data)
                if not data:
                    ev = conn.next_event()
                    if ev is not NEED_DATA:
                        yield ev
                    return

        def send(msg):
            writer.write(conn.send(msg))

        evs = events()
        try:
            if self.handshake:
                hs = await evs.__anext__()
                send(handshake_response(hs, broker_id=7, max_frame_size=12345))
            await self.script(evs, send, writer)
        except (ConnectionError, StopAsyncIteration):
            pass
        finally:
            writer.close()


def metadata_response(req, name="t"):
    return MetadataResponse(topics=(TopicMetadata(name),), correlation_id=req.correlation_id)


async def answer_forever(evs, send, writer):
    async for req in evs:
        send(metadata_response(req, str(req.correlation_id)))


def test_handshake_learns_the_broker():
    async def main():
        async with Scripted(answer_forever) as srv:
            conn = await AsyncConnection.connect("127.0.0.1", srv.port, client_id="me")
            assert conn.broker_id == 7 and conn.max_frame_size == 12345
            resp = await conn.request(MetadataRequest(topics=("a",)))
            assert isinstance(resp, MetadataResponse)
            conn.close()
    run(main())


def test_pipelined_requests_are_matched_by_correlation_id():
    async def script(evs, send, writer):
        pending = []
        async for req in evs:
            pending.append(req)
            if len(pending) == 20:  # all twenty were in flight at once
                for r in pending:
                    send(metadata_response(r, str(r.correlation_id)))
                await writer.drain()

    async def main():
        async with Scripted(script) as srv:
            conn = await AsyncConnection.connect("127.0.0.1", srv.port)
            futs = [await conn.send(MetadataRequest(topics=(str(i),))) for i in range(20)]
            assert conn.in_flight == 20
            responses = await asyncio.gather(*futs)
            assert [r.topics[0].name for r in responses] == [str(r.correlation_id) for r in responses]
            assert len({r.correlation_id for r in responses}) == 20
            assert conn.in_flight == 0
            conn.close()
    run(main())


def test_an_answer_overtaking_an_earlier_one_closes_the_connection():
    """The broker answers in order: the second answer arriving first means the
    first was lost, so nothing pending on the connection can be trusted."""
    async def script(evs, send, writer):
        reqs = []
        async for req in evs:
            reqs.append(req)
            if len(reqs) == 3:
                send(metadata_response(reqs[1]))  # the answer to reqs[0] is lost
                await writer.drain()

    async def main():
        async with Scripted(script) as srv:
            conn = await AsyncConnection.connect("127.0.0.1", srv.port)
            futs = [await conn.send(MetadataRequest(topics=(str(i),))) for i in range(3)]
            results = await asyncio.gather(*futs, return_exceptions=True)
            assert all(isinstance(r, NetworkError) for r in results), results
            assert "was lost" in str(results[0])
            assert conn.closed
    run(main())


def test_server_closing_mid_request_fails_pending_with_network_error():
    async def script(evs, send, writer):
        async for _ in evs:
            writer.close()  # hang up without answering
            return

    async def main():
        async with Scripted(script) as srv:
            conn = await AsyncConnection.connect("127.0.0.1", srv.port)
            fut = await conn.send(MetadataRequest())
            with pytest.raises(NetworkError, match=f"127.0.0.1:{srv.port}"):
                await fut
            assert conn.closed
            with pytest.raises(NetworkError):
                await conn.send(MetadataRequest())
    run(main())


def test_server_closing_mid_frame_fails_pending():
    async def script(evs, send, writer):
        async for req in evs:
            writer.write(b"\x00\x00\x01\x00\x00")  # the start of a frame, no more
            await writer.drain()
            writer.close()
            return

    async def main():
        async with Scripted(script) as srv:
            conn = await AsyncConnection.connect("127.0.0.1", srv.port)
            with pytest.raises(NetworkError):
                await conn.request(MetadataRequest())
    run(main())


def test_close_fails_every_pending_future_with_the_reason():
    async def script(evs, send, writer):
        async for _ in evs:
            pass

    async def main():
        async with Scripted(script) as srv:
            conn = await AsyncConnection.connect("127.0.0.1", srv.port)
            futs = [await conn.send(MetadataRequest()) for _ in range(3)]
            conn.close("shutting down")
            for fut in futs:
                with pytest.raises(NetworkError, match="shutting down"):
                    await fut
    run(main())


def test_connect_refused_raises_no_brokers_available_quickly():
    port = refused_port()

    async def main():
        start = time.monotonic()
        with pytest.raises(NoBrokersAvailable, match=f"127.0.0.1:{port}"):
            await AsyncConnection.connect("127.0.0.1", port, connect_timeout=5)
        assert time.monotonic() - start < 5
    run(main())


def test_silent_server_times_out_the_handshake():
    async def never_answer(evs, send, writer):
        async for _ in evs:
            pass

    async def main():
        async with Scripted(never_answer, handshake=False) as srv:
            start = time.monotonic()
            with pytest.raises(NoBrokersAvailable, match="no answer within"):
                await AsyncConnection.connect("127.0.0.1", srv.port, connect_timeout=0.3)
            assert time.monotonic() - start < 3
    run(main())


def test_refused_handshake_raises_the_error_class():
    async def serve_refusal(reader, writer):
        conn = Connection(Role.SERVER)
        conn.receive_data(await reader.read(65536))
        conn.next_event()
        writer.write(conn.send(HandshakeResponse(version=1, error_code=int(ErrorCode.UNSUPPORTED_VERSION),
                                                 error_message="too new")))
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(serve_refusal, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(UnsupportedVersionError, match="too new"):
            await AsyncConnection.connect("127.0.0.1", port)
        server.close()
    run(main())


async def never_answers(evs, send, writer):
    async for _ in evs:
        pass


def test_request_timeout_fails_the_request_and_closes():
    async def main():
        async with Scripted(never_answers) as srv:
            conn = await AsyncConnection.connect("127.0.0.1", srv.port, request_timeout=0.2)
            first = await conn.send(MetadataRequest())
            second = await conn.send(MetadataRequest(), timeout=10)
            with pytest.raises(RequestTimedOutError, match="Metadata"):
                await first
            with pytest.raises(NetworkError, match="timed out"):
                await second
            assert conn.closed
    run(main())


def test_a_shorter_timeout_sent_later_fires_first():
    async def main():
        async with Scripted(never_answers) as srv:
            conn = await AsyncConnection.connect("127.0.0.1", srv.port, request_timeout=30)
            slow = await conn.send(MetadataRequest(), timeout=20)
            fast = await conn.send(MetadataRequest(), timeout=0.2)
            start = time.monotonic()
            with pytest.raises(RequestTimedOutError, match="within 200 ms"):
                await fast
            assert time.monotonic() - start < 5
            with pytest.raises(NetworkError, match="timed out"):
                await slow
    run(main())


def test_answered_requests_leave_the_later_deadlines_watched():
    async def script(evs, send, writer):
        answered = False
        async for req in evs:
            if not answered:  # only the first request gets an answer
                answered = True
                send(metadata_response(req))

    async def main():
        async with Scripted(script) as srv:
            conn = await AsyncConnection.connect("127.0.0.1", srv.port, request_timeout=30)
            first = await conn.send(MetadataRequest(), timeout=0.1)
            second = await conn.send(MetadataRequest(), timeout=0.4)
            await first  # answered: its deadline must not close the connection
            assert not conn.closed
            with pytest.raises(RequestTimedOutError, match="within 400 ms"):
                await second
            assert conn.closed
    run(main())


def test_error_response_raises_the_protocol_class():
    async def script(evs, send, writer):
        async for req in evs:
            send(ErrorResponse(api_key=req.API_KEY, error_code=int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
                               error_message="no such thing", correlation_id=req.correlation_id))

    async def main():
        async with Scripted(script) as srv:
            conn = await AsyncConnection.connect("127.0.0.1", srv.port)
            with pytest.raises(UnknownTopicOrPartitionError, match="no such thing"):
                await conn.request(MetadataRequest())
            assert not conn.closed  # a request-level error keeps the connection
            conn.close()
    run(main())


def test_produce_with_acks_0_expects_no_answer():
    received = asyncio.Queue()

    async def script(evs, send, writer):
        async for req in evs:
            await received.put(req)
            if isinstance(req, MetadataRequest):
                send(metadata_response(req))

    async def main():
        async with Scripted(script) as srv:
            conn = await AsyncConnection.connect("127.0.0.1", srv.port)
            from protocol.batch import build_batch
            records = build_batch([b"x"])
            fut = await conn.send(ProduceRequest(acks=0, partitions=(ProducePartition("t", 0, records),)))
            assert fut is None and conn.in_flight == 0
            req = await received.get()
            assert bytes(req.partitions[0].records) == records
            await conn.request(MetadataRequest())  # the connection is still in step
            conn.close()
    run(main())
