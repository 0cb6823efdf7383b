"""Reconciliation on a schedule: a task per link with ``reconcile.every``, in the daemon.

It runs ``relay.work.reconcile.reconcile`` only while the link is active (started and tested), at
the configured interval counted from the link's last run, and wakes the couriers when a run
enqueued fixes. A failed run is logged where it failed; the next comes at the usual time.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable

import structlog

from relay.config import Config, Link
from relay.db.store import Database
from relay.errors import ReconcileFailed
from relay.keys.keystore import KeyStore
from relay.work.link_gate import LinkGate
from relay.work.reconcile import reconcile

log = structlog.get_logger("relay.work.reconcile")

#: How often a link that is not active is looked at again before its scheduled run (seconds).
INACTIVE_RECHECK = 30.0


def start(config: Config, db: Database, keys: KeyStore, gate: LinkGate,
          wake: Callable[[], None]) -> list[asyncio.Task[None]]:
    """A task per link with ``reconcile.every``: it runs only while the link is active.
    ``wake`` tells the couriers that a run enqueued fixes."""
    return [asyncio.create_task(_every(config, db, keys, gate, wake, link),
                                name=f"reconcile-{link.id}")
            for link in config.links.values() if link.reconcile_every]


async def _every(config: Config, db: Database, keys: KeyStore, gate: LinkGate,
                 wake: Callable[[], None], link: Link) -> None:
    every = float(link.reconcile_every or 0)
    last = await db.call(_last_started, link.id)
    while True:
        due = (last or 0.0) + every
        await asyncio.sleep(max(due - time.time(), 0.0) if last is not None else every)
        state = gate.state(link.id)
        if state is None or not state.delivering:
            # Not before the link is active: look again soon, then run at once.
            last = time.time() - every + min(INACTIVE_RECHECK, every)
            continue
        last = time.time()
        try:
            report = await reconcile(config, link.id, keys, db.call, db.transaction,
                                     repair=link.reconcile_repair)
            if report.enqueued:
                wake()  # the fixes go out now, not at a poll
        except ReconcileFailed:
            pass  # logged where it failed; the next run comes at the usual time
        except Exception:
            log.exception("reconcile_crashed", link=link.id)


def _last_started(conn: sqlite3.Connection, link: str) -> float | None:
    row = conn.execute("SELECT max(started_at) FROM reconcile_runs WHERE link = ?",
                       (link,)).fetchone()
    return None if row[0] is None else float(row[0])
