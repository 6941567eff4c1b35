"""Warm stdio MCP servers: each launch identity's server is started once per worker and shared
by the calls that need it, instead of one process per call.

A launch identity is the account, the command line and the environment. The account is part
of it because Parley is multi-tenant and a server may keep state between calls (in memory, or
in its HOME directory, which lives as long as the server): one account's calls never reach a
server another account's calls started. Within an account, every session and agent with the
same command line shares one server.

A server is pinged before it is used again. It leaves the pool when it has been idle for
`idle_seconds`, when `max_servers` others were used more recently and room is needed, when
its connection ended or it failed the ping (it exited, crashed or hangs: the call starts a
new one), or when an operation on it failed (its state is unknown). A
server that left the pool stops as soon as no call is using it; all stop when the pool closes.
Each runs in its own new empty directory, which is also its HOME, removed when it stops.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import anyio
from cachetools import TTLCache
from mcp import Client, MCPError, StdioServerParameters
from mcp.client import Transport
from mcp.client._transport import TransportStreams
from mcp.client.stdio import stdio_client
from mcp.shared.message import SessionMessage
from mcp.types import CONNECTION_CLOSED, REQUEST_TIMEOUT, Implementation
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

log = logging.getLogger(__name__)

# A warm server that takes longer than this to answer a ping is replaced by a new one.
PING_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class StdioLaunch:
    """What makes two stdio servers interchangeable: the same account, program, arguments
    and environment (HOME aside: each server gets its own)."""

    account_id: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, account_id: str, parameters: StdioServerParameters) -> StdioLaunch:
        env = sorted((parameters.env or {}).items())
        return cls(account_id, (parameters.command, *parameters.args), tuple(env))


class WarmStdioServer:
    """One running stdio server and its MCP session, owned by a task of the pool.

    `users` counts the operations using it; once `retire`d it stops when that reaches zero.
    """

    def __init__(self, parameters: StdioServerParameters, client_info: Implementation) -> None:
        self._parameters = parameters
        self._client_info = client_info
        self._ready = anyio.Event()
        self._stop = anyio.Event()
        self._failure: Exception | None = None
        self._client: Client | None = None
        self._life = anyio.CancelScope()
        self.connection_ended = False
        self.retired = False
        self.users = 0

    async def run(self, start_timeout: float) -> None:
        """Start the server, hold its session until asked to stop or its connection ends.
        Never raises (nothing awaits its task): a failure to start is kept for
        `started` to raise in the calls waiting for it."""
        try:
            with tempfile.TemporaryDirectory(
                prefix="parley-mcp-", ignore_cleanup_errors=True
            ) as workdir:
                env = {**(self._parameters.env or {}), "HOME": workdir}
                parameters = self._parameters.model_copy(update={"cwd": workdir, "env": env})
                transport = _reporting_end(stdio_client(parameters), self._connection_closed)
                # One scope for the whole life, so the start's deadline can be lifted without
                # leaving a cancel scope while the session's task groups are open.
                self._life.deadline = anyio.current_time() + start_timeout
                with self._life:
                    async with Client(
                        transport, cache=None, client_info=self._client_info
                    ) as client:
                        self._life.deadline = math.inf
                        self._client = client
                        self._ready.set()
                        await self._stop.wait()
                if self._life.cancelled_caught and not self._ready.is_set():
                    raise TimeoutError(f"the server did not start within {start_timeout:g} s")
        except Exception as error:
            log.debug("stdio MCP server %r stopped", self._parameters.command, exc_info=True)
            self._failure = error
        finally:
            self.connection_ended = True
            self._client = None
            self._ready.set()

    async def started(self) -> Client:
        """The session, once the server is up; raises what stopped it from starting."""
        await self._ready.wait()
        if self._client is None:
            raise self._failure or RuntimeError("the server stopped")
        return self._client

    def retire(self) -> None:
        self.retired = True
        self.stop_if_unused()

    def stop_if_unused(self) -> None:
        if self.retired and self.users == 0:
            self.stop()

    def stop(self) -> None:
        """Stop now; a start under way is abandoned (and its process stopped)."""
        self._stop.set()
        if not self._ready.is_set():
            self._life.cancel()

    def _connection_closed(self) -> None:
        self.connection_ended = True
        self._stop.set()


class _LeastRecentlyUsed(TTLCache[StdioLaunch, WarmStdioServer]):
    """An LRU map with idle expiry whose every server let go of (evicted, expired) is
    retired."""

    def popitem(self) -> tuple[StdioLaunch, WarmStdioServer]:
        launch, server = super().popitem()
        server.retire()
        return launch, server

    def expire(self, time: float | None = None) -> list[tuple[StdioLaunch, WarmStdioServer]]:
        expired = list(super().expire(time))
        for _, server in expired:
            server.retire()
        return expired


class StdioServerPool:
    """The warm stdio servers of one worker; make one with `warm_stdio_servers`."""

    def __init__(self, max_servers: int, idle_seconds: float, client_info: Implementation) -> None:
        self._client_info = client_info
        self._servers = _LeastRecentlyUsed(maxsize=max_servers, ttl=idle_seconds)
        # Each server's task, while it runs, in the pool or not (a retired one finishing its
        # calls). Plain asyncio tasks in the pool's own context, not a task group: the pool
        # may be closed by another task than the one that opened it (pytest's fixtures do).
        self._running: dict[WarmStdioServer, asyncio.Task[None]] = {}
        self._context = contextvars.copy_context()
        self.idle_seconds = idle_seconds

    @asynccontextmanager
    async def session(
        self, account_id: str, parameters: StdioServerParameters, start_timeout: float
    ) -> AsyncIterator[Client]:
        """A started server's session for this launch identity, started now if there is
        none (bounded by `start_timeout`) or if the last one's connection ended. An error in
        the block retires the server: whatever it was doing, a fresh one is the safe bet."""
        launch = StdioLaunch.of(account_id, parameters)
        server = self._servers.get(launch)
        if server is not None and not await self._answers(launch, server):
            server = None
        if server is None:
            server = self._start(launch, parameters, start_timeout)
        server.users += 1
        try:
            client = await server.started()
            yield client
        except BaseException:
            self._drop(launch, server)
            raise
        finally:
            server.users -= 1
            if self._servers.get(launch) is server:
                self._servers[launch] = server  # idle from now: the expiry starts again
            server.stop_if_unused()

    async def _answers(self, launch: StdioLaunch, server: WarmStdioServer) -> bool:
        """Whether a server started earlier still answers; if not, it leaves the pool. The
        ping catches a server that died while idle before its end was noticed, so the call
        goes to a new server rather than into a closed pipe (where it would count as sent)."""
        if not server.connection_ended:
            server.users += 1
            try:
                client = await server.started()
                with anyio.fail_after(PING_TIMEOUT_SECONDS):
                    await _ping(client)
                return True
            except Exception:
                log.debug("stdio MCP server %r did not answer a ping", launch.argv[0])
            finally:
                server.users -= 1
        self._drop(launch, server)
        return False

    def running_count(self) -> int:
        return len(self._running)

    def expire_idle(self) -> None:
        self._servers.expire()

    async def stop_all(self) -> None:
        self._servers.clear()
        for server in list(self._running):
            server.retired = True
            server.stop()
        await asyncio.gather(*self._running.values())

    def _start(
        self, launch: StdioLaunch, parameters: StdioServerParameters, start_timeout: float
    ) -> WarmStdioServer:
        server = WarmStdioServer(parameters, self._client_info)
        self._servers[launch] = server  # may evict the least recently used
        task = asyncio.create_task(
            server.run(start_timeout), name="warm stdio MCP server", context=self._context.copy()
        )
        self._running[server] = task
        task.add_done_callback(lambda _: self._running.pop(server, None))
        return server

    def _drop(self, launch: StdioLaunch, server: WarmStdioServer) -> None:
        if self._servers.get(launch) is server:
            del self._servers[launch]
        server.retire()


@asynccontextmanager
async def warm_stdio_servers(
    max_servers: int, idle_seconds: float, client_info: Implementation
) -> AsyncIterator[StdioServerPool]:
    """A pool whose idle servers are stopped `idle_seconds` after their last use, and whose
    servers all stop when the block exits (each gets the SDK's bounded shutdown: stdin
    closed, then SIGTERM, then SIGKILL to its process group)."""
    pool = StdioServerPool(max_servers, idle_seconds, client_info)
    reaper = asyncio.create_task(_expire_idle_forever(pool), name="stdio MCP idle expiry")
    try:
        yield pool
    finally:
        reaper.cancel()
        await pool.stop_all()


async def _expire_idle_forever(pool: StdioServerPool) -> None:
    interval = min(pool.idle_seconds / 4, 5.0)
    while True:
        await asyncio.sleep(interval)
        pool.expire_idle()


async def _ping(client: Client) -> None:
    """A request every server answers, or raise: `ping` on handshake-era connections; on
    newer ones, where ping was removed, `server/discover` (stateless, changes nothing)."""
    try:
        if client.protocol_version in MODERN_PROTOCOL_VERSIONS:
            await client.session.send_discover(client.protocol_version)
        else:
            await client.send_ping()
    except MCPError as error:
        if error.code in (CONNECTION_CLOSED, REQUEST_TIMEOUT):  # made up here, not answers
            raise


@asynccontextmanager
async def _reporting_end(
    transport: Transport, on_end: Callable[[], None]
) -> AsyncIterator[TransportStreams]:
    """The transport's streams, calling `on_end()` once the server's side has closed (it
    exited, crashed, or closed its stdout), so the pool knows not to send to it again."""
    async with AsyncExitStack() as stack:
        read_stream, write_stream = await stack.enter_async_context(transport)
        relayed, relayed_reader = anyio.create_memory_object_stream[SessionMessage | Exception](0)

        async def relay() -> None:
            try:
                async with relayed:
                    async for message in read_stream:
                        await relayed.send(message)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass  # the session closed its end first
            finally:
                on_end()

        tasks = await stack.enter_async_context(anyio.create_task_group())
        tasks.start_soon(relay)
        stack.callback(tasks.cancel_scope.cancel)
        async with relayed_reader:
            yield relayed_reader, write_stream
