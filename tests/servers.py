"""Serving an ASGI app over real HTTP on a loopback port, inside the test's event loop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn


def bound_socket() -> socket.socket:
    """A loopback socket bound to a free port and not listening yet: connections to it are
    refused until it is served."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@asynccontextmanager
async def served(app: Any, sock: socket.socket | None = None, **config: Any) -> AsyncIterator[str]:
    """`config` goes to uvicorn.Config (e.g. `ssl_certfile`); the URL is http:// regardless.

    Idle connections are kept longer than httpx keeps them (5 s): with equal limits a client
    may reuse a connection just as the server closes it, and the request fails with ReadError.
    """
    sock = sock or bound_socket()
    config.setdefault("timeout_keep_alive", 30)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", **config))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()  # surfaces a startup failure
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()
