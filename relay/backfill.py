"""A link's initial sync ("backfill"): the users a site already has, sent as if just created.

When a link is started for the first time (``links.start``), ``begin`` opens one cursor per
source site of the link (push: the link's site; pull: the remote; bidirectional: both) in the
``backfills`` table, under a new generation. The daemon's ``Backfiller`` then reads each source's
users a page at a time, in user ID order, from the plugin's signed ``GET …/userrelay/v1/users``,
turns each user into an event (create, plus password, roles and metadata as present; id
``backfill-<link>-<generation>-<user id>``; occurred_at = the user's modification time there)
and feeds the page to ``queue.accept``, the path live events take: identity, routing by the
link's rules, each person's line and the queue are the same. The cursor moves in the same
transaction, so a restart of the relay or a site carries on from the last page stored, and a
page read twice adds nothing (event ids are deterministic; ``seen_events`` keeps them once).

Back-pressure: a source's next page is not read while more than ``backfill.window`` pages of
its deliveries wait to go out, so neither side ever holds the whole user list.

A live change made during the sync wins: each user's snapshot carries the version of each
field group, and the target's plugin writes only the groups whose version is newer than its own
(docs/adr/0011-convergent-versions.md); from a plugin without versions, it does not apply the
snapshot to a user whose own modification time is newer (docs/adr/0006-initial-sync.md).

This module owns the cursors and their progress; it never delivers (the couriers do).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog

from relay import queue
from relay.config import Config, Link
from relay.errors import InvalidEvent, SiteUnreadable, StoreUnavailable
from relay.events import Event, parse_event
from relay.keystore import KeyStore
from relay.plugin_client import PluginClient
from relay.routing import Route, Router
from relay.store import Database, GroupCommit

if TYPE_CHECKING:  # relay.links begins a sync when a link starts: name its gate only for types
    from relay.links import LinkGate

log = structlog.get_logger("relay.backfill")

#: How often the runner looks for work when there was none (seconds): new cursors, a window
#: that drained, a link that started delivering.
POLL = 0.1
#: Waits after a page could not be read: the first, doubled each time up to the last.
RETRY_FIRST, RETRY_MOST = 2.0, 300.0
MAX_ANSWER_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Cursor:
    """Where one source site's part of a link's initial sync stands."""

    link: str
    source: str
    target: str
    generation: int
    after: int              # last user id done
    total: int | None
    done: int
    queued: int
    started_at: float
    updated_at: float
    finished_at: float | None
    completed_at: float | None
    last_error: str | None

    @property
    def prefix(self) -> str:
        """Every event id of this sync begins so (``event_id`` ranges find its deliveries)."""
        return f"backfill-{self.link}-{self.generation}-"


def sources_of(link: Link) -> list[str]:
    """The sites whose users a link's initial sync reads: where its changes flow from."""
    if link.direction == "push":
        return [link.site]
    if link.direction == "pull":
        return [link.remote]
    return [link.site, link.remote]


# --- the cursors (on the writer's connection, inside a transaction) ---------------------------

def begin(conn: sqlite3.Connection, config: Config, link_id: str, now: float) -> int:
    """Open a new generation of ``link_id``'s initial sync, from the first user; its number."""
    link = config.links[link_id]
    (last,) = conn.execute("SELECT max(generation) FROM backfills WHERE link = ?",
                           (link_id,)).fetchone()
    generation = int(last or 0) + 1
    conn.execute("DELETE FROM backfills WHERE link = ?", (link_id,))
    conn.executemany(
        "INSERT INTO backfills (link, source, generation, started_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?)", [(link_id, s, generation, now, now) for s in sources_of(link)])
    log.info("backfill_begun", link=link_id, generation=generation, sources=sources_of(link))
    return generation


def cursors(conn: sqlite3.Connection, config: Config, link_id: str | None = None,
            unfinished: bool = False) -> list[Cursor]:
    """The cursors of configured links (of ``link_id`` only, if given; not completed only)."""
    rows = conn.execute(
        "SELECT link, source, generation, after, total, done, queued, started_at, updated_at, "
        "finished_at, completed_at, last_error FROM backfills ORDER BY link, source").fetchall()
    found = []
    for row in rows:
        link = config.links.get(row[0])
        if link is None or (link_id is not None and row[0] != link_id):
            continue
        if unfinished and row[10] is not None:
            continue
        target = link.remote if row[1] == link.site else link.site
        found.append(Cursor(row[0], row[1], target, *row[2:]))
    return found


def pending(conn: sqlite3.Connection, cursor: Cursor) -> int:
    """Deliveries of this sync still waiting to go to the cursor's target."""
    (count,) = conn.execute(
        f"SELECT count(*) FROM deliveries WHERE target = ? AND {queue.IN_LINE} "
        "AND event_id >= ? AND event_id < ?",
        (cursor.target, cursor.prefix, cursor.prefix[:-1] + ".")).fetchone()  # '.' follows '-'
    return int(count)


def take_page(conn: sqlite3.Connection, cursor: Cursor, page: Page, routes: list[Route],
              now: float) -> dict[str, Any] | None:
    """Queue one page's events through ``queue.accept`` and move the cursor past it, in one
    transaction. None if the cursor moved meanwhile (a new generation): nothing is queued."""
    row = conn.execute("SELECT generation, after FROM backfills WHERE link = ? AND source = ?",
                       (cursor.link, cursor.source)).fetchone()
    if row is None or (row[0], row[1]) != (cursor.generation, cursor.after):
        return None
    answer: dict[str, Any] = {"deliveries": 0}
    if page.events:
        webhook_id = f"{cursor.prefix}{cursor.source}-after-{cursor.after}"
        _, answer = queue.accept(conn, cursor.source, webhook_id, page.events, routes, now)
    conn.execute(
        "UPDATE backfills SET after = ?, total = ?, done = done + ?, queued = queued + ?, "
        "updated_at = ?, finished_at = ?, last_error = NULL WHERE link = ? AND source = ?",
        (page.last_id, page.total, page.scanned, int(answer.get("deliveries", 0)), now,
         now if page.next is None else None, cursor.link, cursor.source))
    return answer


def complete(conn: sqlite3.Connection, cursor: Cursor, now: float) -> None:
    conn.execute("UPDATE backfills SET completed_at = ? WHERE link = ? AND source = ? "
                 "AND generation = ?", (now, cursor.link, cursor.source, cursor.generation))


def record_error(conn: sqlite3.Connection, cursor: Cursor, error: str, now: float) -> None:
    conn.execute("UPDATE backfills SET last_error = ?, updated_at = ? WHERE link = ? "
                 "AND source = ? AND generation = ?",
                 (error, now, cursor.link, cursor.source, cursor.generation))


# --- a page of users --------------------------------------------------------------------------

@dataclass(frozen=True)
class Page:
    events: list[Event]
    next: int | None        # the cursor of the next page; None: this was the last
    last_id: int            # the cursor after this page
    total: int
    scanned: int            # users looked at (those left out, e.g. administrators, included)


def parse_page(body: bytes, cursor: Cursor, url: str) -> Page:
    """The plugin's answer as events; ``SiteUnreadable`` if it is not a page of users."""
    try:
        document = json.loads(body)
        users, following, total = document["users"], document["next"], document["total"]
        if not isinstance(users, list) or not isinstance(total, int) or not (
                following is None or isinstance(following, int) and following > cursor.after):
            raise ValueError("expected users (a list), next (a user id after the cursor, or "
                             "null) and total (a number)")
    except (ValueError, TypeError, KeyError) as exc:
        raise SiteUnreadable(f"site {cursor.source!r} answered {url} with no page of users: "
                             f"{exc}") from None
    events = []
    last_id = cursor.after
    for i, user in enumerate(users):
        event = _event(user, cursor, f"users[{i}]")
        if event is not None:
            events.append(event)
            last_id = max(last_id, event.user_id)
    scanned = document.get("scanned", len(users))
    return Page(events, following, following if following is not None else last_id, total,
                scanned if isinstance(scanned, int) else len(users))


def _event(user: Any, cursor: Cursor, where: str) -> Event | None:
    """One user of a page as a create event, or None (logged) if it is not one."""
    if not isinstance(user, dict):
        log.warning("backfill_user_skipped", site=cursor.source, where=where,
                    reason="not an object")
        return None
    actions = ["create"]
    if isinstance(user.get("password_hash"), str):
        actions.append("password")
    if isinstance(user.get("roles"), list):
        actions.append("roles")
    if isinstance(user.get("meta"), dict):
        actions.append("metadata")
    # The stored versions travel with the snapshot: the target keeps each field group it holds
    # a newer version of (docs/adr/0011-convergent-versions.md).
    user = dict(user)
    raw = {"id": f"{cursor.prefix}{user.get('id')}", "actions": actions,
           "occurred_at": user.get("modified"), "user": user}
    if "versions" in user:
        raw["versions"] = user.pop("versions")
    try:
        return replace(parse_event(raw, where), backfill=True)
    except InvalidEvent as exc:
        log.warning("backfill_user_skipped", site=cursor.source, reason=exc.message)
        return None


async def fetch_page(session: aiohttp.ClientSession, config: Config, keys: KeyStore,
                     cursor: Cursor, limit: int, timeout: float) -> Page:
    """One page of the source's users after the cursor, signed like a ping."""
    site = config.sites[cursor.source]
    key = keys.get(site.id)
    if key is None:
        raise SiteUnreadable(f"site {site.id!r} has no key; run userrelay keys generate "
                             f"{site.id}")
    client = PluginClient(site.id, site.url, key, session, timeout, site.ca_file)
    url = client.url("users")
    try:
        reply = await client.call("users", max_answer=MAX_ANSWER_BYTES, after=cursor.after,
                                  limit=limit)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise SiteUnreadable(client.unreachable("users", exc)) from None
    if reply.status != 200:
        raise SiteUnreadable(f"site {site.id!r} answered {reply.status} at {url}"
                             + reply.excerpt() + (reply.protocol_hint()
                                                  if reply.status in (400, 401, 404) else ""))
    return parse_page(reply.body, cursor, url)


# --- the daemon's runner ----------------------------------------------------------------------

class Backfiller:
    """Moves every unfinished initial sync of an active link on, a page at a time."""

    def __init__(self, config: Config, db: Database, group: GroupCommit, router: Router,
                 keys: KeyStore, session: aiohttp.ClientSession, gate: LinkGate,
                 wake: Callable[[str], None]) -> None:
        self._config, self._db, self._group, self._router = config, db, group, router
        self._keys, self._session, self._gate, self._wake = keys, session, gate, wake
        self._page_size = config["backfill.page_size"]
        self._window = config["backfill.window"] * self._page_size
        self._timeout = config["delivery.timeout"]
        self._retry: dict[tuple[str, str], tuple[float, float]] = {}  # (when, last wait)

    async def run(self) -> None:
        while True:
            try:
                moved = await self.step()
            except (sqlite3.Error, StoreUnavailable) as exc:  # the cursors stay; try again
                log.error("backfill_failed", error=str(exc))
                moved = False
            if not moved:
                await asyncio.sleep(POLL)

    async def step(self) -> bool:
        """One page for each source that may take one now; whether any page was taken."""
        moved = False
        for cursor in await self._db.call(cursors, self._config, None, True):
            if not self._gate.deliverable([cursor.link]):
                continue  # not started, paused, or a site untested: the sync waits with it
            if self._retry.get((cursor.link, cursor.source), (0.0, 0.0))[0] > time.time():
                continue
            waiting = await self._db.call(pending, cursor)
            if cursor.finished_at is not None:
                if waiting == 0:
                    await self._db.transaction(complete, cursor, time.time())
                    log.info("backfill_completed", link=cursor.link, source=cursor.source,
                             generation=cursor.generation, users=cursor.done)
                continue
            if waiting >= self._window:
                continue  # back-pressure: the target has enough of this sync to take
            moved |= await self._next_page(cursor)
        return moved

    async def _next_page(self, cursor: Cursor) -> bool:
        try:
            page = await fetch_page(self._session, self._config, self._keys, cursor,
                                    self._page_size, self._timeout)
        except SiteUnreadable as exc:
            when, last = self._retry.get((cursor.link, cursor.source), (0.0, 0.0))
            wait = min(RETRY_MOST, last * 2 if last else RETRY_FIRST)
            self._retry[(cursor.link, cursor.source)] = (time.time() + wait, wait)
            log.warning("backfill_page_unread", link=cursor.link, site=cursor.source,
                        after=cursor.after, error=str(exc), retry_in=wait)
            await self._db.transaction(record_error, cursor, str(exc), time.time())
            return False
        self._retry.pop((cursor.link, cursor.source), None)
        routes = [r for r in self._router.routes_from(cursor.source) if r.target == cursor.target]
        answer = await self._group.submit(take_page, cursor, page, routes, time.time())
        if answer is None:
            return False
        log.info("backfill_page", link=cursor.link, site=cursor.source, after=cursor.after,
                 users=len(page.events), deliveries=answer.get("deliveries", 0),
                 last=page.next is None)
        if answer.get("deliveries"):
            self._wake(cursor.target)
        return True


# --- progress ---------------------------------------------------------------------------------

def progress(conn: sqlite3.Connection, config: Config, link_id: str,
             now: float | None = None) -> dict[str, Any] | None:
    """How far the link's initial sync is: users done of total, rate, time left (None when
    the link never had one). Done means read and delivered (or left out)."""
    now = time.time() if now is None else now
    found = cursors(conn, config, link_id)
    if not found:
        return None
    sources, total, done = {}, 0, 0
    for c in found:
        waiting = 0 if c.completed_at is not None else pending(conn, c)
        site_done = max(c.done - waiting, 0)
        site_total = max(c.total or 0, c.done)
        sources[c.source] = {"target": c.target, "after": c.after, "read": c.done,
                             "pending": waiting, "done": site_done, "total": c.total,
                             "completed": c.completed_at is not None,
                             "last_error": c.last_error}
        total, done = total + site_total, done + site_done
    completed = all(c.completed_at is not None for c in found)
    started = min(c.started_at for c in found)
    ended = max(c.completed_at or 0.0 for c in found) if completed else now
    rate = done / (ended - started) if ended > started and done else 0.0
    known = all(c.total is not None for c in found)
    left = (total - done) / rate if rate and known and not completed else None
    return {"generation": found[0].generation, "state": "completed" if completed else "running",
            "done": done, "total": total if known else None, "started_at": started,
            "completed_at": ended if completed else None, "rate": round(rate, 1),
            "seconds_left": None if left is None else round(left, 1), "sources": sources}


def render(link_id: str, p: dict[str, Any] | None, bar: bool = True, width: int = 30) -> str:
    """One line (and one per error) for a terminal: done of total, a bar, rate, time left."""
    if p is None:
        return f"Link {link_id}: no initial sync (it starts when the link is first started)"
    total = p["total"]
    share = p["done"] / total if total else (1.0 if p["state"] == "completed" else 0.0)
    line = f"Link {link_id} initial sync #{p['generation']}: {p['done']} of " \
           f"{'?' if total is None else total} users"
    if bar:
        filled = round(share * width)
        line += f" [{'#' * filled}{'.' * (width - filled)}]"
    line += f" {share * 100:.0f}%"
    if p["state"] == "completed":
        line += f", completed at {p['rate']} users/s"
    else:
        line += f", {p['rate']} users/s"
        if p["seconds_left"] is not None:
            line += f", about {_duration(p['seconds_left'])} left"
    errors = [f"  {site}: {s['last_error']}" for site, s in p["sources"].items()
              if s["last_error"]]
    return "\n".join([line, *errors])


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
