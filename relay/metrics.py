"""What the relay tells its operators: Prometheus metrics at ``/metrics``, readiness at ``/readyz``.

The hot paths only bump counters in memory (one increment per request or settled delivery, no
I/O). The queue's depth is read from SQLite when ``/metrics`` is scraped, on a read-only
connection of its own in a worker thread (WAL readers never hold up the writer), through the
partial indexes that already serve ``userrelay status``. Each application has its own
``CollectorRegistry``, so several relays in one process (as in the tests) never share a series.
Never exposes a key or an event's contents: only site ids, link ids, states and counts.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import prometheus_client
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from relay import queue
from relay.appkeys import CONFIG, COURIER_TASKS, DATABASE, GROUP_COMMIT, KEYS, METRICS
from relay.config import Config
from relay.constants import DEAD, DONE, PENDING_STATES, READY

log = structlog.get_logger("relay.metrics")

# The *_created series would double every scrape's size; nothing of ours reads them.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

#: The ``site`` label of requests naming no configured site (ids cannot start with '_'), so a
#: stranger cannot grow the number of series.
UNKNOWN_SITE = "_unknown"
EVENT_OUTCOMES = ("accepted", "duplicate", "echo")
DELIVERY_OUTCOMES = ("done", "retry", "dead", "paused")
#: Upper bounds of the delivery latency histogram, in seconds, up to the default timeout.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: How long /readyz waits for the database before it says it is not answering.
PROBE_TIMEOUT = 5.0
#: How long /readyz waits for another process's write lock before it says "locked".
PROBE_LOCK_WAIT = 1.0
#: Free space under which the disk holding the database counts as full (a group commit of a
#: full batch of requests, with its WAL frames, needs about this much).
MIN_FREE_BYTES = 1024 * 1024
_OUTCOME_OF_STATE = {DONE: "done", READY: "retry", DEAD: "dead"}


class Metrics:
    """The relay's counters and gauges, in one registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._requests = Counter(
            "userrelay_ingest_requests", "Requests to POST /v1/sites/{site}/events, by answer "
            "status.", ["site", "status"], registry=r)
        self._events = Counter(
            "userrelay_ingest_events", "Events received from a site: accepted, duplicate "
            "(seen before, or in a repeated request) or echo (a change the relay had applied).",
            ["site", "outcome"], registry=r)
        self._deliveries = Counter(
            "userrelay_deliveries", "Delivery attempts settled, per target site: done, retry "
            "(failed, tried again later), dead (dead-lettered) or paused (held: link paused).",
            ["target", "outcome"], registry=r)
        self._latency = Histogram(
            "userrelay_delivery_seconds", "Time of one delivery request to a site, answer read.",
            ["target"], buckets=LATENCY_BUCKETS, registry=r)
        self._depth = Gauge(
            "userrelay_queue_depth", "Deliveries pending per target site and state, read from "
            "the database when scraped.", ["target", "state"], registry=r)
        self._dead = Gauge(
            "userrelay_dead_letters", "Dead-lettered deliveries per target site, read from the "
            "database when scraped.", ["target"], registry=r)
        self._lock = asyncio.Lock()

    def know(self, config: Config) -> None:
        """Start each configured site's series at zero, so a rate() has a baseline."""
        for site in config.sites:
            for outcome in EVENT_OUTCOMES:
                self._events.labels(site, outcome)
            for outcome in DELIVERY_OUTCOMES:
                self._deliveries.labels(site, outcome)
            self._latency.labels(site)

    # --- hooks on the hot paths: memory only -------------------------------------------------

    def ingest_request(self, config: Config, site: str, status: int) -> None:
        self._requests.labels(site if site in config.sites else UNKNOWN_SITE, str(status)).inc()

    def ingested(self, site: str, answer: dict[str, Any], events: int, repeat: bool) -> None:
        if repeat:  # the answer is the first request's: these events were counted then
            self._events.labels(site, "duplicate").inc(events)
            return
        for outcome, key in zip(EVENT_OUTCOMES, ("accepted", "duplicates", "echoes"),
                                strict=True):
            if answer.get(key):
                self._events.labels(site, outcome).inc(answer[key])

    def settled(self, target: str, states: list[str]) -> None:
        for state in states:
            self._deliveries.labels(target, _OUTCOME_OF_STATE.get(state, state)).inc()

    def paused(self, target: str, deliveries: int) -> None:
        self._deliveries.labels(target, "paused").inc(deliveries)

    def request_took(self, target: str, seconds: float) -> None:
        self._latency.labels(target).observe(seconds)

    # --- at scrape time ------------------------------------------------------------------------

    async def exposition(self, config: Config, accept: str) -> tuple[bytes, str]:
        """The body and its content type (the format the scraper accepts), depth read now."""
        async with self._lock:  # two scrapes at once would interleave clear() and set()
            pending, dead = await asyncio.to_thread(_read_depth, config.database_path)
            self._depth.clear()
            self._dead.clear()
            for target in sorted(set(config.sites) | {t for t, _ in pending} | set(dead)):
                for state in PENDING_STATES:
                    self._depth.labels(target, state).set(pending.get((target, state), 0))
                self._dead.labels(target).set(dead.get(target, 0))
            encode, content_type = choose_encoder(accept)
            return encode(self.registry), content_type


def _read_depth(path: Path) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        # Spelt as the partial indexes deliveries_line and deliveries_dead are, so both are used.
        pending = {(t, s): n for t, s, n in conn.execute(
            f"SELECT target, state, count(*) FROM deliveries WHERE {queue.IN_LINE} "
            "GROUP BY target, state")}
        dead = dict(conn.execute("SELECT target, count(*) FROM deliveries "
                                 f"WHERE state = '{DEAD}' GROUP BY target").fetchall())
    finally:
        conn.close()
    return pending, dead


def accept(conn: sqlite3.Connection, *args: Any) -> tuple[int, dict[str, Any], bool]:
    """``queue.accept``, also telling whether the request was a repeat of one already taken.

    A repeat changes nothing (its stored answer is read back); anything else writes at least
    its receipt. So the connection's change count tells, without another query.
    """
    before = conn.total_changes
    status, answer = queue.accept(conn, *args)
    return status, answer, conn.total_changes == before


def counted(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
            ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Count each ingest request by site and answer status."""
    @functools.wraps(handler)
    async def count(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            _count(request, exc.status)
            raise
        except Exception:
            _count(request, 500)
            raise
        _count(request, response.status)
        return response
    return count


def _count(request: web.Request, status: int) -> None:
    app = request.app
    app[METRICS].ingest_request(app[CONFIG], request.match_info.get("site", ""), status)


# --- the endpoints ----------------------------------------------------------------------------

async def metrics_page(request: web.Request) -> web.Response:
    """``GET /metrics``: the Prometheus text format."""
    app = request.app
    body, content_type = await app[METRICS].exposition(app[CONFIG],
                                                       request.headers.get("Accept", ""))
    return web.Response(body=body, headers={"Content-Type": content_type})


async def readyz(request: web.Request) -> web.Response:
    """``GET /readyz``: 200 when events can be taken and delivered, else 503 naming what is not."""
    problems = await not_ready(request.app, write=True)
    if problems:
        return web.json_response({"status": "not ready", "problems": problems}, status=503)
    return web.json_response({"status": "ready"})


async def not_ready(app: web.Application, write: bool) -> dict[str, str]:
    """What keeps the relay from working: the database, the group commit, the couriers.

    ``write``: prove the database can be written (``/readyz``); otherwise only that its thread
    answers (the watchdog: a full disk is not cured by a restart).
    """
    problems: dict[str, str] = {}
    if not app[GROUP_COMMIT].running:
        problems["group_commit"] = "the group-commit task is not running"
    stopped = sorted(t.get_name() for t in app[COURIER_TASKS] if t.done())
    if stopped:
        problems["couriers"] = f"not running: {', '.join(stopped)}"
    try:
        if write:
            problem = await asyncio.wait_for(app[DATABASE].call(
                _probe_write, app[CONFIG].database_path), PROBE_TIMEOUT)
            if problem:
                problems["database"] = f"cannot be written: {problem}"
        else:
            await asyncio.wait_for(app[DATABASE].call(_probe_read), PROBE_TIMEOUT)
    except TimeoutError:
        problems["database"] = f"no answer within {PROBE_TIMEOUT:g}s"
        if write and await asyncio.to_thread(_locked, app[CONFIG].database_path):
            # Our writer waits for a lock another process holds (busy_timeout).
            problems["database"] = (f"cannot be written: it is locked by another writer (the "
                                    f"relay has waited more than {PROBE_TIMEOUT:g}s for it)")
    except sqlite3.Error as exc:
        problems["database"] = f"{'cannot be written' if write else 'does not answer'}: {exc}"
    if write:  # a site whose key cannot be opened is refused: not ready (restart cannot cure)
        unreadable = app[KEYS].problems()
        if unreadable:
            problems["keys"] = "; ".join(unreadable.values())
    return problems


def _probe_write(conn: sqlite3.Connection, path: Path) -> str | None:
    """Why the database cannot take a write now, or None. Runs on the writer's thread,
    between two of its transactions; writes nothing.

    A write that succeeds here could still fail at its commit (SQLite writes pages only then,
    often over the WAL's old pages), so a full or read-only file system is asked directly;
    the write lock is then taken (a writer of another process holds it: locked) and a page
    added and given back (the file at its size limit).
    """
    if conn.in_transaction:
        # Left open by a commit that failed (a full disk, an I/O error): until it is rolled
        # back every write would fail with "cannot start a transaction within a transaction".
        conn.execute("ROLLBACK")
        log.warning("stale_transaction_rolled_back", database=str(path))
    try:
        disk = os.statvfs(path.parent)
    except OSError as exc:
        return f"its folder {path.parent} cannot be read: {exc.strerror or exc}"
    if disk.f_flag & os.ST_RDONLY:
        return f"the file system holding {path} is read-only"
    free = disk.f_bavail * disk.f_frsize
    if free < MIN_FREE_BYTES:
        return (f"the disk holding {path} is full ({free} bytes free; at least "
                f"{MIN_FREE_BYTES} needed)")
    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        return f"{path} or its folder is not writable by the relay's user"
    (busy,) = conn.execute("PRAGMA busy_timeout").fetchone()
    conn.execute(f"PRAGMA busy_timeout={int(PROBE_LOCK_WAIT * 1000)}")
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE readiness_probe (x)")
        finally:
            conn.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            return f"it is locked by another writer (another process holds a write " \
                   f"transaction for more than {PROBE_LOCK_WAIT:g}s)"
        raise
    finally:
        conn.execute(f"PRAGMA busy_timeout={int(busy)}")
    return None


def _locked(path: Path) -> bool:
    """Whether a writer holds the database's write lock now (asked without waiting)."""
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=0)
    except sqlite3.Error:
        return False
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError as exc:
        return "locked" in str(exc) or "busy" in str(exc)
    finally:
        conn.close()


def _probe_read(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT 1").fetchone()
