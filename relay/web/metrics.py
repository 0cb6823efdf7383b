"""The operators' endpoints: Prometheus metrics at ``/metrics``, readiness at ``/readyz``.

The counters themselves are relay/work/metrics.py; here each ingest request is counted by site
and answer status, and ``/readyz`` probes the database, the disk and the keys.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog
from aiohttp import web

from relay.web.appkeys import CONFIG, COURIER_TASKS, DATABASE, GROUP_COMMIT, KEYS, METRICS

log = structlog.get_logger("relay.web.metrics")

#: How long /readyz waits for the database before it says it is not answering.
PROBE_TIMEOUT = 5.0
#: How long /readyz waits for another process's write lock before it says "locked".
PROBE_LOCK_WAIT = 1.0
#: Free space under which the disk holding the database counts as full (a group commit of a
#: full batch of requests, with its WAL frames, needs about this much).
MIN_FREE_BYTES = 1024 * 1024


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
