"""The store: a full disk is answered 503 and nothing of the request is acknowledged."""

from __future__ import annotations

import sqlite3
from typing import Any

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
