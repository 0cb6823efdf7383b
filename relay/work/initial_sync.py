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

This module reads the pages; the cursors and their progress are relay/db/cursors.py. It never
delivers (the couriers do).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import aiohttp
import structlog

from relay.config import Config
from relay.db.cursors import Cursor, Page, complete, cursors, pending, record_error, take_page
from relay.db.store import Database, GroupCommit
from relay.errors import InvalidEvent, SiteUnreadable, StoreUnavailable
from relay.keys.keystore import KeyStore
from relay.model.events import Event, parse_event
from relay.model.routing import Router
from relay.sites.client import PluginClient
from relay.work.link_gate import LinkGate

log = structlog.get_logger("relay.work.initial_sync")

#: How often the runner looks for work when there was none (seconds): new cursors, a window
#: that drained, a link that started delivering.
POLL = 0.1
#: Waits after a page could not be read: the first, doubled each time up to the last.
RETRY_FIRST, RETRY_MOST = 2.0, 300.0
MAX_ANSWER_BYTES = 64 * 1024 * 1024


# --- a page of users --------------------------------------------------------------------------

def parse_page(body: bytes, cursor: Cursor, url: str) -> Page:
    """The plugin's answer as events; ``SiteUnreadable`` if it is not a page of users."""
    try:
        document = json.loads(body)
        users, following, total = document["users"], document["next"], document["total"]
        if not isinstance(users, list) or not isinstance(total, int) or not (
                following is None or (isinstance(following, int) and following > cursor.after)):
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
        log.warning("initial_sync_user_skipped", site=cursor.source, where=where,
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
        log.warning("initial_sync_user_skipped", site=cursor.source, reason=exc.message)
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
        self._page_size = config.initial_sync.page_size
        self._window = config.initial_sync.window * self._page_size
        self._timeout = config.delivery.timeout
        self._retry: dict[tuple[str, str], tuple[float, float]] = {}  # (when, last wait)

    async def run(self) -> None:
        while True:
            try:
                moved = await self.step()
            except (sqlite3.Error, StoreUnavailable) as exc:  # the cursors stay; try again
                log.error("initial_sync_failed", error=str(exc))
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
                    log.info("initial_sync_completed", link=cursor.link, source=cursor.source,
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
            log.warning("initial_sync_page_unread", link=cursor.link, site=cursor.source,
                        after=cursor.after, error=str(exc), retry_in=wait)
            await self._db.transaction(record_error, cursor, str(exc), time.time())
            return False
        self._retry.pop((cursor.link, cursor.source), None)
        routes = [r for r in self._router.routes_from(cursor.source) if r.target == cursor.target]
        answer = await self._group.submit(take_page, cursor, page, routes, time.time())
        if answer is None:
            return False
        log.info("initial_sync_page", link=cursor.link, site=cursor.source, after=cursor.after,
                 users=len(page.events), deliveries=answer.get("deliveries", 0),
                 last=page.next is None)
        if answer.get("deliveries"):
            self._wake(cursor.target)
        return True


