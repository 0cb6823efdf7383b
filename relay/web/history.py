"""The last hour of the relay's own figures, for the console's charts: events in, deliveries
out, what is queued and the delivery lag, sampled every few seconds from the status snapshot.

The samples are kept in memory, one series per database, in this module: a reload of the
configuration (a new app) carries on with the same series; a restart of the process starts
a new one. Nothing here is written to the database.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from relay.config import Config
from relay.db import status
from relay.db.store import connect_sync
from relay.web.appkeys import CONFIG

log = structlog.get_logger("relay.web.history")
#: Seconds between samples, and how many are kept (one hour).
SAMPLE_EVERY = 5.0
KEPT = int(3600 / SAMPLE_EVERY)
FIELDS = ("at", "events_in", "deliveries_out", "queued", "in_flight", "dead", "lag")


class History:
    def __init__(self) -> None:
        self.samples: deque[tuple[float, ...]] = deque(maxlen=KEPT)

    def add(self, snapshot: dict[str, Any]) -> None:
        sites = snapshot["sites"].values()
        lags = [s["oldest_pending_age"] for s in sites if s["oldest_pending_age"] is not None]
        self.samples.append((
            snapshot["at"],
            sum(s["events_in_per_minute"] for s in sites),
            sum(s["events_out_per_minute"] for s in sites),
            sum(sum(s["pending"].values()) for s in sites),
            sum(s["pending"]["leased"] for s in sites),
            sum(s["dead_letters"] for s in sites),
            max(lags, default=0.0)))

    def series(self) -> dict[str, Any]:
        """Each figure as a list, oldest first (uPlot's columns): ``at`` in unix seconds,
        ``events_in`` and ``deliveries_out`` per minute, ``lag`` in seconds."""
        columns = list(zip(*self.samples, strict=True)) if self.samples else [()] * len(FIELDS)
        return {"every": SAMPLE_EVERY, **{name: list(col) for name, col in
                                          zip(FIELDS, columns, strict=True)}}


_HISTORIES: dict[Path, History] = {}


def of(relay: web.Application) -> History:
    """The series of the relay's database (one per process and database)."""
    return _HISTORIES.setdefault(relay[CONFIG].database_path, History())


def take_sample(config: Config) -> dict[str, Any]:
    conn = connect_sync(config.database_path)
    try:
        return status.snapshot(conn, config)
    finally:
        conn.close()


def sampling(relay: web.Application) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context that samples ``relay``'s figures while the app runs."""
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(_sample(relay), name="history")
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return ctx


async def _sample(relay: web.Application) -> None:
    series, config = of(relay), relay[CONFIG]
    while True:
        started = time.monotonic()
        try:
            series.add(await asyncio.to_thread(take_sample, config))
        except sqlite3.Error as exc:
            log.warning("history_sample_failed", error=str(exc))
        await asyncio.sleep(max(SAMPLE_EVERY - (time.monotonic() - started), 0.5))
