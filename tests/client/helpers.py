"""Shared bits for the client tests."""

from __future__ import annotations

import asyncio
import socket


def run(coro, timeout: float = 20.0):
    """Run ``coro`` in a fresh event loop, failing after ``timeout`` seconds."""

    async def bounded():
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


def refused_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
