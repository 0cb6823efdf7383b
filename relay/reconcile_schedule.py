"""Reconciliation on a schedule: a task per link with ``reconcile.every``, in the daemon.

It runs ``relay.reconcile.reconcile`` only while the link is active (started and tested), at
the configured interval counted from the link's last run, and wakes the couriers when a run
enqueued fixes. A failed run is logged where it failed; the next comes at the usual time.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from relay.appkeys import CONFIG, COURIERS, DATABASE, KEYS, LINKS
from relay.config import Link
from relay.errors import ReconcileFailed
from relay.reconcile import reconcile

log = structlog.get_logger("relay.reconcile")

#: How often a link that is not active is looked at again before its scheduled run (seconds).
INACTIVE_RECHECK = 30.0


async def schedule_ctx(app: web.Application) -> AsyncIterator[None]:
    """A task per link with ``reconcile.every``: it runs only while the link is active."""
    tasks = [asyncio.create_task(_every(app, link), name=f"reconcile-{link.id}")
             for link in app[CONFIG].links.values() if link.reconcile_every]
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _every(app: web.Application, link: Link) -> None:
    db, every = app[DATABASE], float(link.reconcile_every or 0)
    last = await db.call(_last_started, link.id)
    while True:
        due = (last or 0.0) + every
        await asyncio.sleep(max(due - time.time(), 0.0) if last is not None else every)
        state = app[LINKS].state(link.id)
        if state is None or not state.delivering:
            # Not before the link is active: look again soon, then run at once.
            last = time.time() - every + min(INACTIVE_RECHECK, every)
            continue
        last = time.time()
        try:
            report = await reconcile(app[CONFIG], link.id, app[KEYS], db.call, db.transaction,
                                     repair=link.reconcile_repair)
            if report.enqueued:
                for courier in app[COURIERS].values():  # the fixes go out now, not at a poll
                    courier.wake()
        except ReconcileFailed:
            pass  # logged where it failed; the next run comes at the usual time
        except Exception:  # noqa: BLE001 - the schedule must outlive one bad run
            log.exception("reconcile_crashed", link=link.id)


def _last_started(conn: sqlite3.Connection, link: str) -> float | None:
    row = conn.execute("SELECT max(started_at) FROM reconcile_runs WHERE link = ?",
                       (link,)).fetchone()
    return None if row[0] is None else float(row[0])
