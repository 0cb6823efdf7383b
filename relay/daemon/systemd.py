"""Running under systemd: sd_notify(3) messages and the watchdog's ping.

``notify`` sends one datagram to the unix socket named by ``$NOTIFY_SOCKET`` (a name starting
with ``@`` is in the abstract namespace). Without that variable, as when the relay is started
from a shell, every call does nothing. Standard library only: no libsystemd binding needed.
This module knows nothing of the relay's application; ``watchdog`` is given the check to run.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("relay.daemon.systemd")


def notify(*fields: str) -> bool:
    """Send ``fields`` (``"READY=1"``, ``"STATUS=…"``) as one message; True if one was sent."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        log.warning("notify_unsupported", socket=address, hint="only unix sockets are supported")
        return False
    message = "\n".join(fields).encode("utf-8", "replace")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message)
    except OSError as exc:
        # systemd will notice (start-up or watchdog timeout); the relay itself keeps working.
        log.warning("notify_failed", socket=os.environ["NOTIFY_SOCKET"], error=str(exc))
        return False
    return True


def monotonic_usec() -> str:
    """``MONOTONIC_USEC=…``, which must come with ``RELOADING=1`` (Type=notify-reload)."""
    return f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings (half of ``$WATCHDOG_USEC``), or None when not asked."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000


async def watchdog(interval: float, alive: Callable[[], Awaitable[dict[str, str]]]) -> None:
    """Ping every ``interval`` seconds, but only after ``alive()`` found nothing wrong.

    ``alive`` returns what is not working (empty when all is well). A relay that is wedged
    stops pinging, and systemd restarts it after ``WatchdogSec``.
    """
    while True:
        await asyncio.sleep(interval)
        try:
            problems = await asyncio.wait_for(alive(), timeout=interval)
        except TimeoutError:
            problems = {"check": f"no answer within {interval:g}s"}
        if problems:
            log.error("watchdog_withheld", problems=problems)
        else:
            notify("WATCHDOG=1")
