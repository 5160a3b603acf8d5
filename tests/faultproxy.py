"""A fault-injecting TCP proxy between clients and a broker, for delivery tests.

It runs an asyncio loop in a background thread and forwards 127.0.0.1 traffic
to the broker, parsing the broker-to-client stream into whole frames so that
it can, with the configured probabilities (from one seeded RNG):

- drop a response: the broker processed the request, the client never hears
  back on this connection (it times out and retries);
- cut the connection right after forwarding part of a request, or right after
  the broker answered (the answer is lost with the connection);
- delay a response by a random time.

Counters say how many faults were injected, so a test can insist that the
faults really happened.

The target may be given later (``set_target``): start the proxy first, so its
port is known, then a broker that advertises that port (``--advertised-port``)
so that metadata sends clients through the proxy; until a target is set the
proxy refuses connections by closing them. ``enabled = False`` makes it a
plain pass-through (say, while a test sets up topics).
"""

from __future__ import annotations

import asyncio
import random
import struct
import threading
from dataclasses import dataclass, field

_HANDSHAKE = struct.Struct(">3sBI")
_LEN = struct.Struct(">I")


@dataclass
class Faults:
    drop_response: float = 0.0
    cut_request: float = 0.0
    cut_after_response: float = 0.0
    delay_response: float = 0.0
    max_delay_s: float = 0.05
    counts: dict = field(default_factory=lambda: {"dropped": 0, "cut_request": 0,
                                                  "cut_response": 0, "delayed": 0, "connections": 0})


class FaultProxy:
    def __init__(self, target_host: str = "127.0.0.1", target_port: int | None = None,
                 faults: Faults | None = None, seed: int = 0) -> None:
        self.target: tuple[str, int] | None = None
        if target_port is not None:
            self.set_target(target_host, target_port)
        self.faults = faults if faults is not None else Faults()
        self.rng = random.Random(seed)
        self.port = 0
        self.enabled = True
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server = None
        self._writers: set = set()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set_target(self, host: str, port: int) -> None:
        """Forward new connections to ``host:port`` from now on."""
        self.target = (host, port)

    def start(self) -> "FaultProxy":
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        fut.result(10)
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def _stop():
            self._server.close()
            for w in list(self._writers):
                w.close()
        asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _chance(self, p: float) -> bool:
        return self.enabled and p > 0 and self.rng.random() < p

    async def _handle(self, creader, cwriter) -> None:
        self.faults.counts["connections"] += 1
        if self.target is None:
            cwriter.close()
            return
        try:
            breader, bwriter = await asyncio.open_connection(*self.target)
        except OSError:
            cwriter.close()
            return
        self._writers.update((cwriter, bwriter))
        done = asyncio.Event()

        def cut():
            cwriter.close()
            bwriter.close()
            done.set()

        async def upstream():
            try:
                while not done.is_set():
                    data = await creader.read(65536)
                    if not data:
                        break
                    if len(data) > 1 and self._chance(self.faults.cut_request):
                        self.faults.counts["cut_request"] += 1
                        bwriter.write(data[: self.rng.randrange(1, len(data))])
                        await bwriter.drain()
                        cut()
                        return
                    bwriter.write(data)
                    await bwriter.drain()
            except (OSError, asyncio.CancelledError):
                pass
            cut()

        async def downstream():
            first = True
            try:
                while not done.is_set():
                    if first:
                        head = await breader.readexactly(_HANDSHAKE.size)
                        length = _HANDSHAKE.unpack(head)[2]
                        first = False
                        cwriter.write(head + await breader.readexactly(length))
                        await cwriter.drain()
                        continue
                    head = await breader.readexactly(4)
                    frame = head + await breader.readexactly(_LEN.unpack(head)[0])
                    if self._chance(self.faults.drop_response):
                        self.faults.counts["dropped"] += 1
                        continue
                    if self._chance(self.faults.cut_after_response):
                        self.faults.counts["cut_response"] += 1
                        cut()
                        return
                    if self._chance(self.faults.delay_response):
                        self.faults.counts["delayed"] += 1
                        await asyncio.sleep(self.rng.random() * self.faults.max_delay_s)
                    cwriter.write(frame)
                    await cwriter.drain()
            except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
                pass
            cut()

        await asyncio.gather(upstream(), downstream())
        self._writers.discard(cwriter)
        self._writers.discard(bwriter)
