"""What stands between the network and the relay's handlers.

- ``last_resort``: a middleware for an error nobody meant to raise. The caller gets a 500 that
  says the log has the reason, and the log gets the traceback (aiohttp's own "Error handling
  request" line would reach our JSON log without it). Input never gets here on purpose: every
  refusal is a ``RequestRejected`` answered by the handler's own wrapper.
- ``limit_connections``: at most ``connection_limit()`` connections open at once, safely below
  the process's file limit (``LimitNOFILE`` in deploy/userrelay.service). One more is answered
  503 and closed at once, not queued: a flood of idle connections cannot starve the sites, the
  database or the couriers of file descriptors. At the limit, the connection idle the longest
  is closed to make room; only when none is idle is the new one refused.
- ``quiet_accept_errors``: an error accepting connections (out of file descriptors, …) is
  logged once per ``LOG_INTERVAL`` with how many there were, not once per attempt (a flood
  once wrote 1.25 million lines in 70 s). Refused connections are counted the same way.

- Slow clients: a connection that has sent no complete request (headers included) within
  ``IDLE_TIMEOUT`` of opening is closed; after a request, aiohttp's keep-alive timeout (the
  same, passed by ``create_app``) closes it when idle. A slow body is the handler's to bound.

``protect(server)`` guards a listener's ``web.Server``; ``limit_connections(app, …)`` guards
every runner serving ``app``. It knows HTTP and sockets, nothing of events or sites.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import resource
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

log = structlog.get_logger("relay.web.guard")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Seconds a connection may stay open without a complete request (headers included): a client
#: that sends nothing, or its headers a byte at a time, is cut off after this.
IDLE_TIMEOUT = 15.0
#: File descriptors kept for everything but incoming connections: the database and its WAL,
#: the log, the admin listener, and each courier's, initial sync's and reconciliation's
#: connections to sites (see ``connection_limit``).
RESERVED_FILES = 64
#: Bytes of a request body buffered per connection before reading from it pauses: what a
#: connection can hold of a body nobody has asked for yet (aiohttp's default is 64 KiB; a flood
#: of unsigned bodies would hold that much on every connection until it is refused).
READ_BUFFER = 16 * 1024
#: Seconds between two log lines about refused connections or accept errors.
LOG_INTERVAL = 10.0
#: What a connection past the limit is told before it is closed.
REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
           b"Retry-After: 1\r\nConnection: close\r\nContent-Length: 52\r\n\r\n"
           b'{"error": "too many connections; try again shortly"}')
assert len(REFUSAL.rsplit(b"\r\n\r\n", 1)[1]) == 52


@web.middleware
async def last_resort(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException:
        raise  # aiohttp's own answers: 404, 405, 413, ...
    except Exception:
        log.exception("request_crashed", method=request.method, path=request.path,
                      site=request.match_info.get("site"))
        return web.json_response({"error": "the relay failed to answer this request; its log "
                                  "says why"}, status=500)


def connection_limit(outgoing: int) -> int:
    """Incoming connections allowed at once: the soft file limit less what the relay needs
    for itself (``RESERVED_FILES``, plus ``outgoing`` connections to sites)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(16, soft - RESERVED_FILES - outgoing)


class _Tally:
    """Counts an event and logs it at most once per ``LOG_INTERVAL``, with the count."""

    def __init__(self, event: str) -> None:
        self.event = event
        self.total = 0
        self._pending = 0
        self._last = 0.0

    def count(self, **fields: Any) -> None:
        self.total += 1
        self._pending += 1
        now = time.monotonic()
        if now - self._last >= LOG_INTERVAL:
            log.warning(self.event, count=self._pending, interval=LOG_INTERVAL, **fields)
            self._pending, self._last = 0, now


class _Refused(asyncio.Protocol):
    """A connection past the limit: answered 503 and closed, nothing read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(REFUSAL)
        transport.close()


def _idle(handler: Any) -> bool:
    """Whether an aiohttp connection waits for a request (none in progress, none queued)."""
    waiter = handler._waiter
    return waiter is not None and not waiter.done() and not handler._force_close


class Guarded:
    """A listener's protocol factory: aiohttp's ``Server``, with connections past ``limit``
    refused and connections without a complete request within ``idle_timeout`` closed.
    Everything else is the wrapped server's (a runner may use it as its server)."""

    def __init__(self, server: web.Server, limit: int,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        self._server, self.limit, self.idle_timeout = server, limit, idle_timeout
        self._refused = _Tally("connections_refused")
        self._evicted = _Tally("idle_connections_closed")

    def __call__(self) -> asyncio.Protocol:
        connections = self._server._connections
        if len(connections) >= self.limit:
            # Make room by closing the connection idle the longest (one waiting for a
            # request: an idle keep-alive, a client that sends nothing, or its headers a byte
            # at a time); refuse the new one only if every connection is busy.
            idle = next((h for h in connections if _idle(h)), None)
            if idle is None:
                self._refused.count(limit=self.limit)
                return _Refused()
            idle.force_close()
            self._evicted.count(limit=self.limit)
        handler = self._server()
        # aiohttp's keep-alive timer spares a connection that never completed a request.
        asyncio.get_running_loop().call_later(self.idle_timeout, _close_if_no_request, handler)
        return handler

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


def _close_if_no_request(handler: Any) -> None:
    if handler._request_count == 0 and not handler._force_close:
        handler.force_close()


def protect(server: web.Server, limit: int | None = None,
            idle_timeout: float = IDLE_TIMEOUT) -> Guarded:
    """``server`` as a listener's protocol factory, guarded (``limit``: by default
    ``connection_limit(0)``)."""
    return Guarded(server, connection_limit(0) if limit is None else limit, idle_timeout)


def limit_connections(app: web.Application, limit: int,
                      idle_timeout: float = IDLE_TIMEOUT) -> None:
    """Make every listener serving ``app`` through an ``AppRunner`` guarded."""
    make = app._make_handler

    def make_guarded(**kwargs: Any) -> web.Server:
        return Guarded(make(**kwargs), limit, idle_timeout)  # type: ignore[return-value]
    app._make_handler = make_guarded  # type: ignore[method-assign]


async def quiet_accept_errors(app: web.Application) -> AsyncIterator[None]:
    """A cleanup context: the loop's errors about accepting connections are tallied."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    failures = _Tally("accept_failed")

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if "accept" in message:
            exc = context.get("exception")
            failures.count(error=f"{message}: {exc}" if exc else message)
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)
    loop.set_exception_handler(handle)
    yield
    if loop.get_exception_handler() is handle:
        loop.set_exception_handler(previous)


# --- giving memory back after a flood --------------------------------------------------------
# A flood of bodies nobody asked for leaves the C allocator holding the freed buffers (many
# small chunks, so glibc keeps its heap); malloc_trim gives them back to the system. It is
# called at most once per TRIM_EVERY, and only after bodies were refused unread.

TRIM_EVERY = 1.0
_libc_name = ctypes.util.find_library("c")
_malloc_trim = getattr(ctypes.CDLL(_libc_name), "malloc_trim", None) if _libc_name else None
_refused_unread = False


def refused_unread() -> None:
    """A request was refused before its body was read (relay/web/ingest.py)."""
    global _refused_unread
    _refused_unread = True


async def give_memory_back(app: web.Application) -> AsyncIterator[None]:
    """A cleanup context: after bodies were refused unread, trim the C heap once a second."""
    async def trim() -> None:
        global _refused_unread
        while True:
            await asyncio.sleep(TRIM_EVERY)
            if _refused_unread and _malloc_trim is not None:
                _refused_unread = False
                await asyncio.sleep(TRIM_EVERY)  # let the flood's connections close first
                _malloc_trim(0)
    task = asyncio.create_task(trim(), name="give-memory-back")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
