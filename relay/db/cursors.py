"""Initial-sync cursors: where each source site's part of a link's initial sync stands.

One row per (link, source site) in the ``backfills`` table, under a generation that a new start
of the sync bumps. A page of users is queued through ``queue.accept`` and the cursor moved past it
in one transaction, so a restart carries on from the last page stored. Also the sync's progress
(users done of total, rate, time left) for status, the CLI and the console. The worker that
reads the pages is relay/work/initial_sync.py. Runs inside the writer's transaction or on a read
connection.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Any

import structlog

from relay.config import Config, Link
from relay.db import queue
from relay.model.events import Event
from relay.model.routing import Route

log = structlog.get_logger("relay.db.cursors")


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
    log.info("initial_sync_begun", link=link_id, generation=generation, sources=sources_of(link))
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


@dataclass(frozen=True)
class Page:
    events: list[Event]
    next: int | None        # the cursor of the next page; None: this was the last
    last_id: int            # the cursor after this page
    total: int
    scanned: int            # users looked at (those left out, e.g. administrators, included)


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
