"""The link gate: which links may deliver, as the daemon's couriers and initial syncs see it.

A view kept in memory over relay/db/links.py's states, re-read when a key, a link state or a
test changes (the marker file) and every ``REFRESH_EVERY`` seconds anyway.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

import structlog

from relay.config import Config
from relay.db.links import PAUSED, LinkState, Marker, read_states
from relay.db.store import Database
from relay.keys.keystore import KeyStore

log = structlog.get_logger("relay.work.link_gate")

#: How often the daemon re-reads link states and tests (seconds), and how often it looks at
#: the marker files that other processes replace after a change (then it re-reads at once).
REFRESH_EVERY, WATCH_EVERY = 1.0, 0.1


class LinkGate:
    """Which links may deliver, as the daemon's couriers see it.

    The states are re-read (a few rows: cheap) when a marker says a key, a link state or a test
    changed, and each ``REFRESH_EVERY`` seconds anyway. Until a change seen is re-read, no
    link delivers: a new key holds its site's links before anything is signed with it. A
    pause decided here (a courier got 410) is ``hold``-en at once, before it is stored, and a
    re-read that raced with storing it cannot undo it, so no further batch goes out.
    """

    def __init__(self, config: Config, db: Database, keys: KeyStore) -> None:
        self._config, self._db, self._keys = config, db, keys
        self._marker = Marker(config.database_path)
        self._seen: tuple[object, object] | None = None
        self._refreshing: asyncio.Task[None] | None = None
        self._states: dict[str, LinkState] = {}
        self._held: dict[str, str] = {}
        self._generation = 0
        self._listeners: list[Callable[[], None]] = []
        self._first = True

    def on_delivering(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` whenever a link starts delivering (to wake the couriers)."""
        self._listeners.append(listener)

    def deliverable(self, links: Iterable[str]) -> list[str]:
        """Those of ``links`` that may deliver now. None while a key, a link state or a test
        changed since the last read (two ``stat``s) until it is read again, at once."""
        if self._versions() != self._seen:
            if self._refreshing is None or self._refreshing.done():
                self._refreshing = asyncio.ensure_future(self._refresh_now())
            return []
        return [link for link in links if (s := self._states.get(link)) and s.delivering]

    async def _refresh_now(self) -> None:
        try:
            await self.refresh()
        except sqlite3.Error as exc:
            log.error("link_states_unreadable", error=str(exc))
        for listener in self._listeners:  # whatever was held meanwhile may go now
            listener()

    def state(self, link: str) -> LinkState | None:
        return self._states.get(link)

    def hold(self, link: str, reason: str) -> None:
        """A pause decided in this process: in effect now, before it is stored."""
        self._generation += 1
        self._held[link] = reason
        self._overlay(self._states)

    def stored(self, link: str) -> None:
        """The pause of ``link`` is stored: the database says so from now on."""
        self._generation += 1
        self._held.pop(link, None)

    async def refresh(self) -> None:
        generation, seen = self._generation, self._versions()
        states = await self._db.call(read_states, self._config)
        if generation != self._generation:
            return  # a pause was decided meanwhile: this read may predate it; the next won't
        self._overlay(states)  # a read between a hold and its storing may predate the pause
        before, self._states = self._states, states
        self._seen = seen  # read before the states: they reflect at least those changes
        woke = False
        for link, now in states.items():
            was = before.get(link)
            if self._first:
                if not now.delivering:
                    log.warning("link_not_delivering", link=link, state=now.state,
                                reason=now.reason)
            elif was is not None and was.delivering != now.delivering:
                if now.delivering:
                    log.info("link_delivering", link=link)
                    woke = True
                else:
                    log.warning("link_not_delivering", link=link, state=now.state,
                                reason=now.reason)
        self._first = False
        if woke:
            for listener in self._listeners:
                listener()

    def _versions(self) -> tuple[object, object]:
        return self._keys.version(), self._marker.version()

    def _overlay(self, states: dict[str, LinkState]) -> None:
        for link, reason in self._held.items():
            if link in states and states[link].state != PAUSED:
                states[link] = replace(states[link], state=PAUSED, reason=reason,
                                       since=time.time())

    async def stop(self) -> None:
        """Let a re-read started by ``deliverable`` finish (before the database closes)."""
        if self._refreshing is not None:
            await asyncio.gather(self._refreshing, return_exceptions=True)

    async def run(self) -> None:
        """Re-read at once when a marker changed (looked at every ``WATCH_EVERY``), and every
        ``REFRESH_EVERY`` anyway (a pause stored by a courier touches no marker)."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(WATCH_EVERY)
            if self._versions() != self._seen:
                await self._refresh_now()
                last = time.monotonic()
            elif time.monotonic() - last >= REFRESH_EVERY:
                try:
                    await self.refresh()
                except sqlite3.Error as exc:  # keep the last known states; try again next time
                    log.error("link_states_unreadable", error=str(exc))
                last = time.monotonic()
