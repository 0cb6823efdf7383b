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

from relay.db.schema import prepare
from relay.errors import DatabaseUnusable, StoreUnavailable

log = structlog.get_logger("relay.db.store")
T = TypeVar("T")
P = ParamSpec("P")
#: Work for the writer: a function of the connection alone, its arguments bound.
Work = Callable[[sqlite3.Connection], Any]

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
