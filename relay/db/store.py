"""The SQLite database: its schema, its pragmas, and the one connection that writes.

All reads and writes of the queue go through one aiosqlite connection, whose thread runs each
transaction as a single call (``Database.call``): one hop per transaction, not per statement.
Ingest requests are group-committed: many requests share one ``synchronous=FULL`` commit, and
each request is answered only after that commit (``GroupCommit``). This module knows tables,
not routing or delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import aiosqlite
import structlog

from relay.errors import DatabaseUnusable, StoreUnavailable

log = structlog.get_logger("relay.db.store")
T = TypeVar("T")
P = ParamSpec("P")
#: Work for the writer: a function of the connection alone, its arguments bound.
Work = Callable[[sqlite3.Connection], Any]

SCHEMA_VERSION = 4
SCHEMA = """
CREATE TABLE IF NOT EXISTS site_keys (
    site        TEXT PRIMARY KEY,
    sealed      BLOB NOT NULL,          -- SecretBox(whsec_ key) under the master key
    created_at  REAL NOT NULL,
    previous_sealed BLOB,               -- the key before a rotation with grace, still accepted
    previous_until  REAL                -- ... from the site until then
);
-- One row per accepted request: a repeated webhook-id gets this answer again.
CREATE TABLE IF NOT EXISTS receipts (
    site        TEXT NOT NULL,
    webhook_id  TEXT NOT NULL,
    status      INTEGER NOT NULL,
    answer      TEXT NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (site, webhook_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS receipts_age ON receipts (received_at);
-- Every event id seen from a site, so an event re-sent in another request counts once.
CREATE TABLE IF NOT EXISTS seen_events (
    site        TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    received_at REAL NOT NULL,
    outcome     TEXT NOT NULL,          -- routed | unrouted | echo
    PRIMARY KEY (site, event_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_events_age ON seen_events (received_at);
-- One relay-wide identity per person; accounts map (site, that site's user id) to it.
CREATE TABLE IF NOT EXISTS persons (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    site        TEXT NOT NULL,
    user_id     INTEGER NOT NULL,
    person      INTEGER NOT NULL REFERENCES persons (id),
    email       TEXT,
    login       TEXT,
    PRIMARY KEY (site, user_id)
) WITHOUT ROWID;
-- First contact: a partner's account by email or login. Covering (person included), or SQLite
-- prefers the primary key's (site) prefix and walks every account of the site.
CREATE INDEX IF NOT EXISTS accounts_by_email ON accounts (site, email, person);
CREATE INDEX IF NOT EXISTS accounts_by_login ON accounts (site, login, person);
CREATE INDEX IF NOT EXISTS accounts_person ON accounts (person, site);
-- One row per (event, target site). Never deleted when claimed: a lease marks it in flight.
CREATE TABLE IF NOT EXISTS deliveries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    source      TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    target      TEXT NOT NULL,
    link        TEXT NOT NULL,
    person      INTEGER NOT NULL,
    kind        TEXT NOT NULL,          -- create | update | delete
    actions     TEXT NOT NULL,          -- comma-separated, as sent
    payload     TEXT NOT NULL,          -- the event as the target receives it (JSON)
    state       TEXT NOT NULL,          -- waiting | ready | leased | done | dead | superseded
    attempts    INTEGER NOT NULL DEFAULT 0,
    run_at      REAL NOT NULL,
    lease_until REAL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    last_status INTEGER,
    last_error  TEXT
);
-- The claim path: heads of lines that are due, per target and link (paused links skipped).
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (target, link, run_at, id)
    WHERE state = 'ready';
-- A person's line to a target: what is still pending, in order.
CREATE INDEX IF NOT EXISTS deliveries_line ON deliveries (target, person, id)
    WHERE state IN ('waiting', 'ready', 'leased');
CREATE INDEX IF NOT EXISTS deliveries_leased ON deliveries (lease_until)
    WHERE state = 'leased';
CREATE INDEX IF NOT EXISTS deliveries_finished ON deliveries (updated_at)
    WHERE state IN ('done', 'superseded');
CREATE INDEX IF NOT EXISTS deliveries_dead ON deliveries (target, updated_at)
    WHERE state = 'dead';
-- Status: each target's last success and deliveries per minute, its last failure and why.
CREATE INDEX IF NOT EXISTS deliveries_done ON deliveries (target, updated_at)
    WHERE state = 'done';
CREATE INDEX IF NOT EXISTS deliveries_failed ON deliveries (target, updated_at)
    WHERE last_error IS NOT NULL;
-- A link without a row is a draft (or tested); see relay/db/links.py for the states.
CREATE TABLE IF NOT EXISTS link_states (
    link        TEXT PRIMARY KEY,
    paused      INTEGER NOT NULL,
    reason      TEXT,
    changed_at  REAL NOT NULL,
    started     INTEGER NOT NULL DEFAULT 0  -- an admin started it: it delivers while tested
);
-- Each site's last connection test, and the last one that passed (what lets its links deliver).
-- A fingerprint is sha256 of the site's URL and its key's id then: never the key itself.
CREATE TABLE IF NOT EXISTS site_tests (
    site        TEXT PRIMARY KEY,
    tested_at   REAL NOT NULL,
    passed      INTEGER NOT NULL,
    checks      TEXT NOT NULL,          -- JSON: each check's name, status, detail and fix
    url         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    passed_at   REAL,
    passed_url  TEXT,
    passed_fingerprint TEXT
);
-- Each link's initial sync, per source site: a resumable cursor (see relay/work/initial_sync.py).
CREATE TABLE IF NOT EXISTS backfills (
    link        TEXT NOT NULL,
    source      TEXT NOT NULL,          -- the site whose users are read
    generation  INTEGER NOT NULL,       -- which start of the link (part of the event ids)
    after       INTEGER NOT NULL DEFAULT 0,  -- the cursor: last user id of the site done
    total       INTEGER,                -- users of the site, as its last page said
    done        INTEGER NOT NULL DEFAULT 0,  -- users read and queued (or left out)
    queued      INTEGER NOT NULL DEFAULT 0,  -- deliveries queued for them
    started_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    finished_at REAL,                   -- the site's last page is queued
    completed_at REAL,                  -- ... and every delivery of it settled
    last_error  TEXT,
    PRIMARY KEY (link, source)
);
-- Each reconciliation of a link (relay/work/reconcile.py); summary: JSON counts, or the error.
CREATE TABLE IF NOT EXISTS reconcile_runs (
    id          INTEGER PRIMARY KEY,
    link        TEXT NOT NULL,
    started_at  REAL NOT NULL,
    finished_at REAL,
    summary     TEXT
);
CREATE INDEX IF NOT EXISTS reconcile_runs_link ON reconcile_runs (link, id);
"""
#: Changes to tables an older database already has, by the version that made them. (New tables
#: and indexes need no entry: SCHEMA creates whatever is missing.)
MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: ("DROP INDEX IF EXISTS accounts_email", "DROP INDEX IF EXISTS accounts_login",
        "ALTER TABLE link_states ADD COLUMN started INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE site_keys ADD COLUMN previous_sealed BLOB",
        "ALTER TABLE site_keys ADD COLUMN previous_until REAL"),
    3: (),  # backfills: a new table, created by SCHEMA (the bump makes older databases run it)
    4: (),  # reconcile_runs: a new table, created by SCHEMA (likewise)
}


def connect_sync(path: Path) -> sqlite3.Connection:
    """A plain connection with the relay's pragmas and schema, for the CLI and for key reads.

    A database that cannot be opened is a ``DatabaseUnusable`` naming the path and why."""
    make_folder(path)
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    except sqlite3.Error as exc:
        raise unusable(path, exc) from None
    try:
        prepare(conn)
    except sqlite3.Error as exc:
        conn.close()
        raise unusable(path, exc) from None
    return conn


#: The first bytes of every SQLite database file.
SQLITE_HEADER = b"SQLite format 3\0"
#: The smallest database file that is not empty: one page of the smallest size.
MIN_DATABASE_BYTES = 512


def make_folder(path: Path) -> None:
    """The database's folder, made if missing; ``DatabaseUnusable`` when it cannot be.

    It never opens the database file itself: closing any descriptor of that file drops every
    POSIX lock this process holds on it, those of its open SQLite connections included (the
    daemon opens connections for key reads while its writer is open), which corrupts the
    database. A file that is not a database is refused by SQLite itself ("file is not a
    database", worded by ``unusable``), except one shorter than a page, which SQLite would
    take for an empty database and write over: that is refused here by its size alone."""
    if path.is_dir():
        raise DatabaseUnusable(f"cannot open the database {path}: it is a folder, not a file "
                               "(the setting `database` names the file itself)")
    try:
        size = path.stat().st_size
    except OSError:
        size = 0  # missing (made below) or unreadable (SQLite says why)
    if 0 < size < MIN_DATABASE_BYTES:
        raise DatabaseUnusable(f"cannot open the database {path}: it is not an SQLite "
                               "database (another file has this name?); the setting `database`")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise DatabaseUnusable(f"cannot open the database {path}: {folder} is a file, not a "
                               "folder (the setting `database`)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseUnusable(f"cannot open the database {path}: cannot make its folder "
                               f"{path.parent}: {exc.strerror or exc} (the setting `database`)"
                               ) from None


def unusable(path: Path, exc: BaseException) -> DatabaseUnusable:
    reason = str(exc)
    if "file is not a database" in reason:
        reason += " (this file is not an SQLite database)"
    elif "unable to open" in reason or "readonly" in reason or "read-only" in reason:
        reason += (" (check that the file and its folder exist and that this user may "
                   "write both)")
    return DatabaseUnusable(f"cannot open the database {path}: {reason} (the setting "
                            "`database`)")


def prepare(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit that precedes a 202 survives power loss, not just a process crash.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA foreign_keys=OFF")
    if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
        _migrate(conn)


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema up to date, once, even with several processes opening it at once."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]  # again, under the lock
        if version < SCHEMA_VERSION:
            if version > 0:  # an older database: alter the tables it has, keeping their rows
                for target in sorted(MIGRATIONS):
                    if version < target:
                        for statement in MIGRATIONS[target]:
                            conn.execute(statement)
            for statement in _statements(SCHEMA):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _statements(script: str) -> list[str]:
    """A script's statements, one by one (``executescript`` would commit our transaction)."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    return statements


class Database:
    """The single writing connection; ``call`` runs a function with it on its own thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._aio: aiosqlite.Connection | None = None

    async def open(self) -> None:
        make_folder(self.path)
        try:
            self._aio = await aiosqlite.connect(self.path, isolation_level=None, timeout=30)
        except sqlite3.Error as exc:
            raise unusable(self.path, exc) from None
        try:
            await self.call(prepare)
        except sqlite3.Error as exc:
            await self.close()  # its thread would keep the process alive
            raise unusable(self.path, exc) from None
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._aio is not None:
            await self._aio.close()
            self._aio = None

    async def call(self, fn: Callable[Concatenate[sqlite3.Connection, P], T],
                   *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(connection, *args, **kwargs)`` on the database thread, as one hop."""
        assert self._aio is not None, "the database is not open"
        # aiosqlite's worker runs callables in order on its thread; we give it whole
        # transactions rather than single statements. ``_execute`` and ``_conn`` are
        # aiosqlite's own: docs/adr/0002-one-writer-group-commit.md says why, and which
        # versions we pin; tests/test_store.py fails first if a version changes them.
        bound = functools.partial(fn, self._aio._conn, *args, **kwargs)
        result: T = await self._aio._execute(bound)  # type: ignore[no-untyped-call]
        return result

    async def transaction(self, fn: Callable[Concatenate[sqlite3.Connection, P], T],
                          *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` inside ``BEGIN IMMEDIATE`` … ``COMMIT``; roll back if it raises."""
        return await self.call(in_transaction, _bind(fn, *args, **kwargs))


def _bind(fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args,
          **kwargs: P.kwargs) -> Callable[[sqlite3.Connection], T]:
    """``fn`` with every argument but the connection given."""
    def work(conn: sqlite3.Connection) -> T:
        return fn(conn, *args, **kwargs)
    return work


def in_transaction(conn: sqlite3.Connection, fn: Callable[Concatenate[sqlite3.Connection, P], T],
                   *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(conn, *args)`` inside ``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back if it raises.
    (On a connection of another process, the daemon's writer waits for it: keep it short.)"""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn, *args, **kwargs)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


class GroupCommit:
    """Many callers' writes, one transaction and one fsync; each caller awaits its own result.

    A caller's function runs inside a savepoint: if it raises, only its own work is undone and
    it gets the exception; the others still commit. If the commit itself fails, every caller
    of that batch gets ``StoreUnavailable`` and nothing of theirs was acknowledged.
    """

    def __init__(self, db: Database, max_batch: int) -> None:
        self._db = db
        self._max_batch = max_batch
        self._pending: list[tuple[Work, asyncio.Future[Any]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.commits = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-commit")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for _, future in self._pending:
            if not future.done():
                future.set_exception(StoreUnavailable("the relay is shutting down"))

    async def submit(self, fn: Callable[Concatenate[sqlite3.Connection, P], T],
                     *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(connection, *args, **kwargs)`` in the next group commit; its result once
        committed."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((_bind(fn, *args, **kwargs), future))
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                try:
                    results = await self._db.call(_commit_batch, [work for work, _ in batch])
                except sqlite3.Error as exc:
                    log.error("commit_failed", error=str(exc), requests=len(batch))
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(StoreUnavailable(f"database write failed: {exc}"))
                    continue
                self.commits += 1
                for (_, future), (ok, value) in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)


def _commit_batch(conn: sqlite3.Connection, work: list[Work]) -> list[tuple[bool, Any]]:
    """Run every caller's function in one transaction.

    The fast path runs them back to back. Should one raise, the transaction is rolled back and
    the batch is run again with a savepoint around each caller, so only that caller fails.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        results: list[tuple[bool, Any]] = [(True, fn(conn)) for fn in work]
    except sqlite3.Error:
        conn.execute("ROLLBACK")
        raise  # the database itself is failing: fail the whole batch
    except Exception:  # noqa: BLE001 - a caller's error: find whose, one by one
        conn.execute("ROLLBACK")
        return _commit_one_by_one(conn, work)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return results


def _commit_one_by_one(conn: sqlite3.Connection, work: list[Work]) -> list[tuple[bool, Any]]:
    results: list[tuple[bool, Any]] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for fn in work:
            conn.execute("SAVEPOINT request")
            try:
                value = fn(conn)
            except sqlite3.Error:
                raise
            except Exception as exc:  # noqa: BLE001 - one caller's bad input must not undo the others
                conn.execute("ROLLBACK TO request")
                conn.execute("RELEASE request")
                results.append((False, exc))
                continue
            conn.execute("RELEASE request")
            results.append((True, value))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return results
