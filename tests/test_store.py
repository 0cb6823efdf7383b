"""The store: whole functions on the writer's thread, group commits that answer each caller,
and a full disk answered 503 with nothing of the request acknowledged."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

from relay.db.store import Database, GroupCommit
from relay.model.retry import RetryPolicy, parse_retry_after
from relay.web.appkeys import DATABASE
from tests.support import event


def cap_pages(conn: sqlite3.Connection, extra: int) -> None:
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + extra}")


async def test_a_database_that_cannot_be_written_gets_503_and_nothing_is_acknowledged(
        two_sites: Any) -> None:
    relay, b = await two_sites()
    db = relay.client.server.app[DATABASE]
    await db.call(cap_pages, 0)  # the disk is full
    big = [event(f"e{i}", i, ["create", "metadata"], meta={"bio": "x" * 2000})
           for i in range(1, 51)]

    status, answer = await relay.post("a", big, webhook_id="msg_full")

    assert 503 == status
    assert answer["error"].startswith("not stored, send again later: database write failed")
    assert [(0,), (0,)] == [relay.db("SELECT count(*) FROM deliveries")[0],
                            relay.db("SELECT count(*) FROM receipts")[0]]

    await db.call(cap_pages, 100_000)  # space again: the same request is now taken
    status, answer = await relay.post("a", big, webhook_id="msg_full")
    assert (202, 50) == (status, answer["accepted"])


def test_the_retry_schedule_is_followed_then_its_last_step_repeats() -> None:
    policy = RetryPolicy((5, 300, 1800), jitter=0, max_attempts=10, max_age=1e9,
                         max_retry_after=3600)

    assert [5, 300, 1800, 1800] == [policy.delay(n) for n in (1, 2, 3, 7)]


def test_jitter_spreads_each_wait_within_its_bounds() -> None:
    policy = RetryPolicy((100,), jitter=0.2, max_attempts=10, max_age=1e9, max_retry_after=1)

    delays = {policy.delay(1) for _ in range(200)}

    assert all(80 <= d <= 120 for d in delays) and len(delays) > 100


def test_retry_after_is_honoured_up_to_its_cap() -> None:
    policy = RetryPolicy((5,), jitter=0.2, max_attempts=10, max_age=1e9, max_retry_after=600)

    assert (120, 600) == (policy.delay(1, retry_after=120), policy.delay(1, retry_after=9999))


def test_retry_after_may_be_seconds_or_an_http_date() -> None:
    now = 1_700_000_000.0

    assert 30 == parse_retry_after("30", now)
    assert 60 == parse_retry_after("Tue, 14 Nov 2023 22:14:20 GMT", now)
    assert parse_retry_after("soon", now) is None


def test_giving_up_names_why() -> None:
    policy = RetryPolicy((5,), jitter=0, max_attempts=3, max_age=3600, max_retry_after=1)

    assert (None, "gave up after 3 attempts", "gave up after 1.0 hours of failures") == (
        policy.gives_up(2, 10), policy.gives_up(3, 10), policy.gives_up(1, 3600))


async def test_the_writer_runs_each_whole_function_on_one_thread_of_its_own(
        tmp_path: Path) -> None:
    """``Database.call`` hands aiosqlite's thread a whole function (through aiosqlite's
    ``_execute`` and ``_conn``, docs/adr/0002-one-writer-group-commit.md): an aiosqlite release that
    changed them fails here first, not in production."""
    db = Database(tmp_path / "relay.sqlite3")
    await db.open()
    try:
        def where(conn: sqlite3.Connection, tag: str, *, times: int) -> tuple[int, str]:
            conn.execute("CREATE TABLE IF NOT EXISTS t (tag TEXT)")
            conn.executemany("INSERT INTO t VALUES (?)", [(tag,)] * times)
            return threading.get_ident(), tag

        first, second = await db.call(where, "a", times=1), await db.transaction(where, "b",
                                                                                 times=2)
        assert first[0] == second[0] != threading.get_ident()
        assert ("a", "b") == (first[1], second[1])
        assert [("a", 1), ("b", 2)] == await db.call(
            lambda conn: conn.execute("SELECT tag, count(*) FROM t GROUP BY tag").fetchall())
    finally:
        await db.close()


async def test_a_group_commit_answers_each_caller_with_its_own_result_or_error(
        tmp_path: Path) -> None:
    db = Database(tmp_path / "relay.sqlite3")
    await db.open()
    group = GroupCommit(db, max_batch=10)
    group.start()
    try:
        await db.call(lambda conn: conn.execute("CREATE TABLE t (n INTEGER)"))

        def put(conn: sqlite3.Connection, n: int) -> int:
            if n == 3:
                raise ValueError("three is refused")
            conn.execute("INSERT INTO t VALUES (?)", (n,))
            return n * 10

        results = await asyncio.gather(*(group.submit(put, n) for n in range(5)),
                                       return_exceptions=True)
        assert [0, 10, 20] == results[:3] and [40] == results[4:]
        assert isinstance(results[3], ValueError)
        assert [(0,), (1,), (2,), (4,)] == await db.call(
            lambda conn: conn.execute("SELECT n FROM t ORDER BY n").fetchall())
    finally:
        await group.stop()
        await db.close()
