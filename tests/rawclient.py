"""A minimal blocking client over a raw socket and the sans-IO Connection.

Used by broker tests that must control exactly which bytes are sent (garbage,
half frames, pipelining) without the client library in the way.
"""

from __future__ import annotations

import itertools
import socket

from protocol.connection import NEED_DATA, Connection, Role
from protocol.messages import Handshake


class RawClient:
    def __init__(self, host: str, port: int, *, timeout: float = 10.0, handshake: bool = True) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.conn = Connection(Role.CLIENT)
        self._ids = itertools.count(1)
        if handshake:
            self.sock.sendall(self.conn.send(Handshake(client_id="raw-test")))
            self.next_event()

    def next_id(self) -> int:
        return next(self._ids)

    def send(self, message) -> None:
        self.sock.sendall(self.conn.send(message))

    def next_event(self):
        """Block (up to the socket timeout) for the next event."""
        while True:
            event = self.conn.next_event()
            if event is not NEED_DATA:
                return event
            data = self.sock.recv(1 << 20)
            self.conn.receive_data(data)

    def request(self, message):
        self.send(message)
        return self.next_event()

    def is_closed_by_peer(self) -> bool:
        """True once the broker closed the connection (reads EOF or a reset)."""
        try:
            return self.sock.recv(1 << 16) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
