"""The life of a link: draft, tested, active, paused; and which links may deliver now.

A link delivers only when an admin started it and BOTH its sites have passed a connection test
since either site's URL or key last changed. Until then its events keep queueing (ingest is
unaffected); only the couriers leave it alone.

    draft    a site of the link has not passed a connection test (since its URL or key changed)
    tested   both sites passed; ``start`` makes it active
    active   started and tested: it delivers. Should a site's URL or key change, it is a draft
             again until that site is tested, then delivers again by itself
    paused   by an admin (``pause``) or by the relay (the site answered 401/403/404/410 or
             redirected); ``start`` resumes it, if it is still tested

What is stored (see relay/db/store.py): ``link_states`` (paused and why; started) and
``site_tests`` (each site's last test, its last passing one, and the fingerprint of the site's
URL and key id then: never the key). Tested-ness is worked out on reading, by comparing that
fingerprint with the site's URL in the configuration and its current key id, so a new key or a
new URL resets a site's test without anything having to remember to.

For callers (CLI, admin API):
- ``read_states(conn, config) -> {link: LinkState}``: every link's state and what it lacks.
- ``start(conn, config, link, now) -> LinkState``: raises ``LinkNotReady`` naming what is missing.
  The first start of a link also begins its initial sync (relay/db/cursors.py).
- ``pause(conn, link, reason, now)``; ``record_test(conn, site, url, key_id, passed, checks, now)``.
  These take a connection inside a transaction, like relay/db/queue.py: in the daemon run them with
  ``Database.transaction``, then ``await gate.refresh()`` so the couriers see it at once.
- ``LinkBook(config)``: the same on a connection of its own, for another process (the CLI);
  after each change it replaces a marker file beside the database.
- ``LinkGate``: the daemon's view. It re-reads the states when that marker or the key store's
  changes (looked at ten times a second: a ``stat`` each), and every second anyway; a pause
  decided by a courier holds its link at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog

from relay.config import Config
from relay.db import cursors
from relay.db.store import connect_sync, in_transaction
from relay.errors import ConfigError, LinkNotReady

log = structlog.get_logger("relay.db.links")
T = TypeVar("T")

DRAFT, TESTED, ACTIVE, PAUSED = "draft", "tested", "active", "paused"
ADMIN_PAUSE = "paused by an administrator"


@dataclass(frozen=True)
class SiteTest:
    """A site's last connection test, and its last passing one."""

    site: str
    tested_at: float
    passed: bool
    checks: list[dict[str, Any]]
    url: str
    fingerprint: str
    passed_at: float | None
    passed_url: str | None
    passed_fingerprint: str | None


@dataclass(frozen=True)
class LinkState:
    link: str
    state: str                  # draft | tested | active | paused
    started: bool               # an admin started it (it delivers whenever it is tested)
    reason: str | None          # paused: why; draft: what is missing (and what to do)
    missing: tuple[str, ...]    # per site of the link that lacks a current test: what to do
    since: float | None         # when it was last started or paused

    @property
    def delivering(self) -> bool:
        return self.state == ACTIVE

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "missing": list(self.missing)}


def key_id(sealed: bytes) -> str:
    """The id of a stored key: a hash of its sealed form (random per generation), not the key.
    Here, beside the tests it fingerprints; relay/keys/keystore.py uses it too."""
    return hashlib.sha256(sealed).hexdigest()[:32]


def fingerprint(url: str, site_key_id: str) -> str:
    """What a connection test vouches for: this URL with this key (by id, never the key)."""
    return hashlib.sha256(f"{url}\n{site_key_id}".encode()).hexdigest()


def key_ids(conn: sqlite3.Connection) -> dict[str, str]:
    """Each site's current key id, read from the sealed keys (no master key needed)."""
    return {str(site): key_id(bytes(sealed))
            for site, sealed in conn.execute("SELECT site, sealed FROM site_keys")}


def site_tests(conn: sqlite3.Connection) -> dict[str, SiteTest]:
    tests = {}
    for row in conn.execute("SELECT site, tested_at, passed, checks, url, fingerprint, passed_at, "
                            "passed_url, passed_fingerprint FROM site_tests"):
        tests[row[0]] = SiteTest(row[0], row[1], bool(row[2]), json.loads(row[3]), *row[4:])
    return tests


def missing_test(config: Config, site: str, site_key_id: str | None,
                 test: SiteTest | None) -> str | None:
    """Why ``site`` has no current passing connection test (None when it has one)."""
    run = f"run {config.command(f'sites test {site}')}"
    if site_key_id is None:
        return (f"site {site!r} has no key; run {config.command(f'keys generate {site}')}, "
                f"paste the key into the site, then {run}")
    url = config.sites[site].url
    if test is None or test.passed_fingerprint is None:
        failed = "" if test is None else f" (its last test, {when(test.tested_at)}, failed)"
        return f"site {site!r} has not passed a connection test yet{failed}; {run}"
    if test.passed_fingerprint == fingerprint(url, site_key_id):
        return None
    if test.passed_url != url:
        return (f"site {site!r} has not passed a connection test since its URL changed "
                f"(to {url}); {run}")
    return f"site {site!r} has not passed a connection test since its key changed; {run}"


def read_states(conn: sqlite3.Connection, config: Config) -> dict[str, LinkState]:
    """Every configured link's state, and what it lacks."""
    ids, tests = key_ids(conn), site_tests(conn)
    missing = {s: missing_test(config, s, ids.get(s), tests.get(s)) for s in config.sites}
    stored = {str(r[0]): (bool(r[1]), r[2], r[3], bool(r[4])) for r in conn.execute(
        "SELECT link, paused, reason, changed_at, started FROM link_states")}
    states = {}
    for link in config.links.values():
        paused, reason, since, started = stored.get(link.id, (False, None, None, False))
        lacks = tuple(m for m in (missing[link.site], missing[link.remote]) if m is not None)
        if paused:
            state = PAUSED
        elif lacks:
            state, reason = DRAFT, "; ".join(lacks)
        else:
            state, reason = (ACTIVE if started else TESTED), None
        states[link.id] = LinkState(link.id, state, started, reason, lacks, since)
    return states


def start(conn: sqlite3.Connection, config: Config, link: str, now: float) -> LinkState:
    """Make a tested (or paused, still tested) link active; ``LinkNotReady`` says what lacks."""
    _known(config, link)
    current = read_states(conn, config)[link]
    if current.missing:
        raise LinkNotReady(link, list(current.missing))
    conn.execute("INSERT INTO link_states (link, paused, reason, changed_at, started) "
                 "VALUES (?, 0, NULL, ?, 1) ON CONFLICT (link) DO UPDATE SET paused = 0, "
                 "reason = NULL, changed_at = excluded.changed_at, started = 1", (link, now))
    if not current.started and config.links[link].initial_sync:
        # first start: the users the sites already have go across too (unless the link says
        # initial_sync: false, when only changes from now on, and "send now", travel)
        cursors.begin(conn, config, link, now)
    return read_states(conn, config)[link]


def pause(conn: sqlite3.Connection, link: str, reason: str, now: float) -> None:
    """Pause ``link`` with ``reason``: nothing goes out on it until it is started again."""
    conn.execute("INSERT INTO link_states (link, paused, reason, changed_at) VALUES (?, 1, ?, ?) "
                 "ON CONFLICT (link) DO UPDATE SET paused = 1, reason = excluded.reason, "
                 "changed_at = excluded.changed_at", (link, reason, now))


def record_test(conn: sqlite3.Connection, site: str, url: str, site_key_id: str, passed: bool,
                checks: list[dict[str, Any]], now: float) -> None:
    """Store a connection test of ``site`` made against ``url`` with the key ``site_key_id``."""
    digest = fingerprint(url, site_key_id)
    conn.execute("INSERT INTO site_tests (site, tested_at, passed, checks, url, fingerprint) "
                 "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (site) DO UPDATE SET "
                 "tested_at = excluded.tested_at, passed = excluded.passed, "
                 "checks = excluded.checks, url = excluded.url, "
                 "fingerprint = excluded.fingerprint",
                 (site, now, int(passed), json.dumps(checks), url, digest))
    if passed:  # a failed test leaves the last passing one, and so the links, as they were
        conn.execute("UPDATE site_tests SET passed_at = ?, passed_url = ?, "
                     "passed_fingerprint = ? WHERE site = ?", (now, url, digest, site))


def pending(conn: sqlite3.Connection, links: list[str], site: str | None = None
            ) -> dict[str, int]:
    """Deliveries not yet settled on ``links`` (and, with ``site``, to or from that site):
    how many per state (waiting, ready, leased)."""
    marks = ",".join("?" * len(links)) or "NULL"
    rows = conn.execute(
        f"SELECT state, COUNT(*) FROM deliveries WHERE state IN ('waiting', 'ready', 'leased') "
        f"AND (link IN ({marks}) OR target = ? OR source = ?) GROUP BY state",
        (*links, site, site)).fetchall()
    return {str(state): int(count) for state, count in rows}


def retire(conn: sqlite3.Connection, links: list[str], site: str | None, reason: str,
           now: float) -> int:
    """Dead-letter what is queued on ``links`` (and to or from ``site``), with ``reason``:
    kept, listed by ``userrelay dead list``, replayable should the link come back. Returns
    how many. Their link states and the site's tests go (added again, each starts as a
    draft); the site's key is the key store's to remove."""
    marks = ",".join("?" * len(links)) or "NULL"
    moved = conn.execute(
        f"UPDATE deliveries SET state = 'dead', lease_until = NULL, last_error = ?, "
        f"updated_at = ? WHERE state IN ('waiting', 'ready', 'leased') AND (link IN ({marks}) "
        f"OR target = ? OR source = ?)", (reason, now, *links, site, site)).rowcount
    conn.execute(f"DELETE FROM link_states WHERE link IN ({marks})", links)
    if site is not None:
        conn.execute("DELETE FROM site_tests WHERE site = ?", (site,))
    return int(moved)


def retire_unconfigured(conn: sqlite3.Connection, config: Config, now: float
                        ) -> dict[str, int]:
    """Dead-letter what is queued on links the configuration no longer has (``retire``);
    how many, per link."""
    found = [str(link) for (link,) in conn.execute(
        "SELECT DISTINCT link FROM deliveries WHERE state IN ('waiting', 'ready', 'leased')")
        if link not in config.links]
    moved = {}
    for link in found:
        moved[link] = retire(conn, [link], None, f"link {link!r} is no longer in the "
                             "configuration", now)
    return moved


def _known(config: Config, link: str) -> None:
    if link not in config.links:
        raise ConfigError(config.source, [f"links: no link {link!r}; configured links: "
                                          f"{', '.join(config.links) or '(none)'}"])


def when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


class Marker:
    """A file beside the database, replaced after each change of link states or tests, so
    the daemon notices with one ``stat`` (as relay/keys/keystore.py does for keys)."""

    def __init__(self, database: Path) -> None:
        self._path = database.with_name(database.name + ".links-changed")

    def changed(self) -> None:
        temporary = self._path.with_suffix(f".{secrets.token_hex(4)}")
        temporary.write_text(secrets.token_hex(8))
        os.replace(temporary, self._path)  # a new inode: every reader sees the change

    def version(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)


class LinkBook:
    """Link states and connection tests on a connection of its own: for the CLI, or any
    process other than the daemon (which sees each change at once, through the marker)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._conn = connect_sync(config.database_path)
        self._marker = Marker(config.database_path)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> LinkBook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def states(self) -> dict[str, LinkState]:
        return read_states(self._conn, self.config)

    def state(self, link: str) -> LinkState:
        _known(self.config, link)
        return self.states()[link]

    def start(self, link: str) -> LinkState:
        return self._transaction(start, self.config, link, time.time())

    def pause(self, link: str, reason: str | None = None) -> LinkState:
        _known(self.config, link)
        self._transaction(pause, link, reason or ADMIN_PAUSE, time.time())
        return self.state(link)

    def record_test(self, site: str, url: str, site_key_id: str, passed: bool,
                    checks: list[dict[str, Any]], now: float | None = None) -> None:
        self._transaction(record_test, site, url, site_key_id, passed, checks,
                          time.time() if now is None else now)

    def pending(self, links: list[str], site: str | None = None) -> dict[str, int]:
        return pending(self._conn, links, site)

    def retire(self, links: list[str], site: str | None, reason: str) -> int:
        return self._transaction(retire, links, site, reason, time.time())

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)``: a read on this book's connection."""
        return fn(self._conn, *args)

    def last_test(self, site: str) -> SiteTest | None:
        return site_tests(self._conn).get(site)

    def site_tests(self) -> dict[str, SiteTest]:
        return site_tests(self._conn)

    def _transaction(self, fn: Callable[..., T], *args: Any) -> T:
        result = in_transaction(self._conn, fn, *args)
        self._marker.changed()
        return result
