"""Upkeep of the queue, in the daemon: leases whose courier died are taken back now and then,
and what is past its retention (finished deliveries, receipts, seen event ids) is pruned hourly.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable

import structlog

from relay.config import Config
from relay.db import queue
from relay.db.store import Database

log = structlog.get_logger("relay.work.upkeep")

#: How often finished deliveries and receipts past their retention are removed (seconds).
PRUNE_EVERY = 3600.0


async def run(config: Config, db: Database, wake: Callable[[], None]) -> None:
    """Reclaim expired leases now and then; prune what is past its retention every hour."""
    every = min(config.delivery.lease / 2, 30.0)
    last_prune = 0.0
    while True:
        await asyncio.sleep(every)
        now = time.time()
        try:
            reclaimed = await db.transaction(queue.reclaim_expired, now, False,
                                             config.delivery.max_attempts)
            if reclaimed:
                log.warning("leases_reclaimed", deliveries=reclaimed, at="upkeep")
                wake()
            if now - last_prune >= PRUNE_EVERY:
                keep = config.ingest.receipt_retention
                pruned = await db.transaction(queue.prune, now - keep, now - keep)
                log.info("pruned", deliveries=pruned)
                last_prune = now
        except sqlite3.Error as exc:
            log.error("upkeep_failed", error=str(exc))
