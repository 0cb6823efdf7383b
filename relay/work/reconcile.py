"""Reconciliation: do the two sites of a link still agree, and what would put them back in step.

A change made while the plugin was off, a database restored from a backup or a dead letter
never replayed leaves the sites apart with no event to say so. ``reconcile`` asks both sites
for their users a page at a time (``GET …/userrelay/v1/digests``: per user the match keys, one
sha256 digest per field group, and the user's last reported change), joins the two streams by
the person's identity and reports, per person: missing on one side, or which field groups
(profile, roles, password, meta) differ and which site is the source. See
docs/adr/0007-reconciliation.md for the digest, the paging and the conflict rule.

Identity: a user the relay knows (``accounts``) whose person also has an account on the other
site is keyed by that person; any other user by the link's ``match_by`` (email or login), so a
user the relay never saw still meets its counterpart. The join keeps only the users not met
yet, reading the two sites in turn, so memory follows how far the sites drifted apart, not
how many users they have.

Source: push from the link's site, pull from its remote; on a bidirectional link each field
group that differs goes from the side holding its newer version (relay/model/versions.py: the report
names the site that made that change and when), falling back on the sides' last change times
for groups neither side versioned newer (a tie goes to the link's site); the report shows each
such conflict and how it was decided. Reconciliation never deletes: a user found only on
the receiving side of a one-way link is reported, not repaired.

Repair enqueues fixes through the ordinary ingest path (``queue.accept``), as events built from
the source's full snapshots (``POST …/userrelay/v1/snapshots``) with ids
``repair-<link>-<run>-<user id>``, so order, identity, the link's actions and the apply path
are those of every other change. Each run's summary is stored (``reconcile_runs``) for status.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import structlog

from relay import __version__
from relay.config import Config
from relay.db import queue
from relay.db.reconcile_runs import fail_run, finish_run, person_keys, start_run
from relay.errors import ReconcileFailed
from relay.keys.keystore import KeyStore
from relay.model import versions
from relay.model.events import parse_batch
from relay.model.reconciliation import (
    ACTION_OF,
    CONFLICT,
    DIFFERS,
    MISSING,
    Entry,
    Report,
    SiteUser,
    groups_of,
    repair_event,
    sources_of,
    versions_listed,
)
from relay.model.routing import Router
from relay.sites.client import PluginClient

log = structlog.get_logger("relay.work.reconcile")

#: Users per page asked of a site, and snapshots per request.
PAGE_SIZE = 500
SNAPSHOTS_PER_REQUEST = 200
TIMEOUT = 60.0

#: Runs a function on the database (``fn(conn, *args)``): ``Database.call``/``transaction``.
Runner = Callable[..., Awaitable[Any]]


class SiteReader:
    """The reconciliation routes of one site's plugin, signed with the site's key."""

    def __init__(self, config: Config, site: str, keys: KeyStore,
                 session: aiohttp.ClientSession) -> None:
        key = keys.get(site)
        if key is None:
            raise ReconcileFailed(f"site {site!r} has no key; run userrelay keys generate {site}")
        self.site = site
        self._client = PluginClient(site, config.sites[site].url, key, session, TIMEOUT,
                                    config.sites[site].ca_file)

    async def digests(self, after: int, limit: int, fields: str
                      ) -> tuple[list[SiteUser], int | None]:
        answer = await self._request("digests", after=after, limit=limit, fields=fields)
        users = [SiteUser(int(u["id"]), str(u["email"]), str(u["login"]),
                          float(u["modified"]), dict(u.get("digests") or {}),
                          versions_listed(u.get("versions")))
                 for u in answer["users"]]
        return users, None if answer.get("next") is None else int(answer["next"])

    async def snapshots(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        found: dict[int, dict[str, Any]] = {}
        for start in range(0, len(ids), SNAPSHOTS_PER_REQUEST):
            answer = await self._request("snapshots",
                                         ids=ids[start:start + SNAPSHOTS_PER_REQUEST])
            found.update({int(u["id"]): u for u in answer["users"]})
        return found

    async def _request(self, operation: str, **params: Any) -> dict[str, Any]:
        try:
            reply = await self._client.call(operation, **params)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise ReconcileFailed(f"site {self.site!r} could not be reached: "
                                  f"{self._client.unreachable(operation, exc)}") from None
        if reply.status != 200:
            raise ReconcileFailed(f"site {self.site!r} answered {operation} with "
                                  f"{reply.status}{reply.excerpt()}"
                                  + (reply.protocol_hint() if reply.status in (400, 401, 404)
                                     else ""))
        try:
            answer = reply.json()
        except ValueError:
            raise ReconcileFailed(f"site {self.site!r} answered {operation} with something "
                                  "other than JSON") from None
        if not isinstance(answer, dict):
            raise ReconcileFailed(f"site {self.site!r} answered {operation} with an unexpected "
                                  "body")
        return answer


async def _stream(reader: SiteReader, fields: str, page_size: int
                  ) -> AsyncIterator[list[SiteUser]]:
    after: int | None = 0
    while after is not None:
        users, after = await reader.digests(after, page_size, fields)
        yield users


class _Pending:
    """One site's users not met yet, found by person (when the relay knows them on both
    sites) or else by the link's match key. Both are kept: the relay may learn a person while
    the sites are read (a delivery settles), and one side is then read by person, the other
    by email or login."""

    def __init__(self) -> None:
        self._by_person: dict[int, tuple[SiteUser, str]] = {}
        self._by_match: dict[str, tuple[SiteUser, int | None]] = {}

    def put(self, user: SiteUser, person: int | None, match: str) -> None:
        if person is not None:
            self._by_person[person] = (user, match)
        self._by_match[match] = (user, person)

    def take(self, person: int | None, match: str) -> SiteUser | None:
        if person is not None and person in self._by_person:
            user, their_match = self._by_person.pop(person)
            self._by_match.pop(their_match, None)
            return user
        found = self._by_match.get(match)
        if found is None or (person is not None and found[1] is not None and found[1] != person):
            return None  # the relay knows them as two different people
        del self._by_match[match]
        if found[1] is not None:
            self._by_person.pop(found[1], None)
        return found[0]

    def users(self) -> list[SiteUser]:
        return [user for user, _ in self._by_match.values()]


class Reconciler:
    """One run over one link: compare (``compare``), then optionally ``repair``."""

    def __init__(self, config: Config, link_id: str, keys: KeyStore, read: Runner,
                 write: Runner, session: aiohttp.ClientSession,
                 page_size: int = PAGE_SIZE) -> None:
        self.config, self.link = config, config.links[link_id]
        self._read, self._write, self._page = read, write, page_size
        self._readers = {s: SiteReader(config, s, keys, session)
                         for s in (self.link.site, self.link.remote)}
        self._router = Router(config)

    def _allowed(self, source: str, target: str) -> frozenset[str]:
        """What may flow from ``source`` to ``target``: every link of the pair agreeing."""
        return next((r.actions for r in self._router.routes_from(source) if r.target == target),
                    frozenset())

    async def compare(self, run: int) -> Report:
        link = self.link
        now = time.time()
        groups = groups_of(link)
        report = Report(link.id, run, link.direction, groups, now,
                        users={link.site: 0, link.remote: 0})
        fields = ",".join(groups)
        if "meta" in groups and link.meta_keys and not any(k.endswith("*")
                                                            for k in link.meta_keys):
            # Only the keys the link carries (a prefix cannot be named: then every key).
            fields += ":" + ",".join(link.meta_keys)
        pending = {link.site: _Pending(), link.remote: _Pending()}
        streams = {s: _stream(r, fields, self._page) for s, r in self._readers.items()}
        live = list(streams)
        while live:  # a page from each site in turn: the unmatched of each wait for the other
            for site in list(live):
                other = link.remote if site == link.site else link.site
                try:
                    page = await anext(streams[site])
                except StopAsyncIteration:
                    live.remove(site)
                    continue
                report.users[site] += len(page)
                persons = await self._read(person_keys, site, other, [u.id for u in page])
                for user in page:
                    person, match = persons.get(user.id), self._match(user)
                    counterpart = pending[other].take(person, match)
                    if counterpart is None:
                        pending[site].put(user, person, match)
                    else:
                        self._pair(report, {site: user, other: counterpart})
        for site, left in pending.items():
            for user in left.users():
                self._missing(report, site, user)
        report.finished_at = time.time()
        return report

    def _match(self, user: SiteUser) -> str:
        if self.link.match_by == "email" and user.email:
            return user.email
        # A user without an email is matched by login ("login:" never starts an email: WordPress
        # allows no colon in one), and so named in reports.
        return "login:" + user.login

    def _pair(self, report: Report, users: dict[str, SiteUser]) -> None:
        link = self.link
        a, b = users[link.site], users[link.remote]
        differ = [g for g in report.groups if a.digests.get(g) != b.digests.get(g)]
        if not differ:
            report.in_step += 1
            return
        modified = {link.site: a.modified, link.remote: b.modified}
        sources = sources_of(link)
        if len(sources) == 1:
            self._entry(report, DIFFERS, users, sources[0], differ,
                        f"{link.direction} link: {sources[0]} is the source", None)
            return
        # Bidirectional: each group that differs goes from the side holding its newer change
        # (by version: who made it, not who last received it); a group neither side versioned
        # newer falls back on the sides' last change times (a tie goes to the link's site).
        newer: dict[str, list[str]] = {link.site: [], link.remote: []}
        winning: dict[str, str] = {}
        for group in differ:
            for side, mine, theirs in ((link.site, a, b), (link.remote, b, a)):
                subs = versions.digest_versions(mine.versions, group, theirs.versions)
                ahead = [versions.held(mine.versions, g) for g in subs
                         if versions.key(versions.held(mine.versions, g))
                         > versions.key(versions.held(theirs.versions, g))]
                if ahead:
                    newer[side].append(group)
                    winning[side] = versions.newer(winning.get(side), max(ahead,
                                                                          key=versions.key))
            if group not in newer[link.site] + newer[link.remote]:
                newer[link.remote if b.modified > a.modified else link.site].append(group)
        for source, groups in newer.items():
            if not groups:
                continue
            other = link.remote if source == link.site else link.site
            if source in winning:
                decided = (f"newest change wins: {versions.describe(winning[source])} "
                           f"(held by {source})")
            else:
                decided = (f"most recent change wins: {source} changed at "
                           f"{_when(modified[source])}, the other at {_when(modified[other])}"
                           + (" (a tie goes to the link's site)"
                              if a.modified == b.modified else ""))
            self._entry(report, CONFLICT, users, source, groups, decided, winning.get(source))

    def _entry(self, report: Report, kind: str, users: dict[str, SiteUser], source: str,
               groups: list[str], decided: str, version: str | None) -> None:
        link = self.link
        a, b = users[link.site], users[link.remote]
        target = link.remote if source == link.site else link.site
        allowed = self._allowed(source, target)
        repair = sorted({ACTION_OF[g] for g in groups if ACTION_OF[g] in allowed})
        report.entries.append(Entry(kind, self._match(a), {link.site: a.id, link.remote: b.id},
                                    source, target, groups, repair,
                                    {link.site: a.modified, link.remote: b.modified}, decided,
                                    version))

    def _missing(self, report: Report, site: str, user: SiteUser) -> None:
        link = self.link
        other = link.remote if site == link.site else link.site
        users: dict[str, int | None] = {site: user.id, other: None}
        if site in sources_of(link):
            allowed = self._allowed(site, other)
            repair = (["create", *(ACTION_OF[g] for g in report.groups
                                  if g != "profile" and ACTION_OF[g] in allowed)]
                      if "create" in allowed else [])
            why = f"only on {site}" + ("" if repair else "; the link does not allow create")
            report.entries.append(Entry(MISSING, self._match(user), users, site, other,
                                        [], repair, {site: user.modified}, why))
        else:
            report.entries.append(Entry(
                MISSING, self._match(user), users, None, None, [], [],
                {site: user.modified}, f"only on {site}, which does not send on this "
                f"{link.direction} link; reconciliation never deletes"))

    async def repair(self, report: Report) -> int:
        """Enqueue the report's fixes as ordinary events from their source; how many."""
        router = self._router
        enqueued = 0
        for source in sources_of(self.link):
            todo = [e for e in report.entries if e.source == source and e.repair]
            if not todo:
                continue
            target = todo[0].target
            routes = [r for r in router.routes_from(source) if r.target == target]
            ids = [e.users[source] for e in todo]
            snapshots = await self._readers[source].snapshots([i for i in ids if i is not None])
            need_theirs = [e.users[target] for e in todo if "metadata" in e.repair
                           and target is not None and e.users[target] is not None]
            theirs = (await self._readers[target].snapshots([i for i in need_theirs if i])
                      if need_theirs and target is not None else {})
            events = []
            for entry in todo:
                user = snapshots.get(entry.users[source] or 0)
                if user is None:
                    continue  # gone since the comparison: nothing to send
                other = theirs.get(entry.users.get(target or "") or 0)
                events.append(repair_event(self.link.id, report.run, entry.repair, user, other,
                                           versioned=entry.version is not None))
            for start in range(0, len(events), 1000):
                chunk = events[start:start + 1000]
                batch = parse_batch(json.dumps({"events": chunk}).encode())
                webhook_id = f"repair-{self.link.id}-{report.run}-{source}-{start}"
                _, answer = await self._write(queue.accept, source, webhook_id, batch, routes,
                                              time.time())
                enqueued += int(answer["accepted"])
        report.enqueued = enqueued
        log.info("reconcile_repaired", link=self.link.id, run=report.run, events=enqueued)
        return enqueued


async def reconcile(config: Config, link_id: str, keys: KeyStore, read: Runner, write: Runner,
                    repair: bool = False, session: aiohttp.ClientSession | None = None,
                    page_size: int = PAGE_SIZE) -> Report:
    """Compare the sites of ``link_id`` (and enqueue the fixes if ``repair``); stored."""
    own = session is None
    session = session or aiohttp.ClientSession(headers={"User-Agent": f"UserRelay/{__version__}"})
    try:
        reconciler = Reconciler(config, link_id, keys, read, write, session, page_size)
        run = await write(start_run, link_id, time.time())
        try:
            report = await reconciler.compare(run)
            if repair:
                await reconciler.repair(report)
        except ReconcileFailed as exc:
            await write(fail_run, run, str(exc), time.time())
            log.warning("reconcile_failed", link=link_id, run=run, error=str(exc))
            raise
        await write(finish_run, report)
        summary = report.summary()
        log.info("reconciled", link=link_id, run=run, in_step=summary["in_step"],
                 missing=summary["missing"], differs=summary["differs"],
                 conflicts=summary["conflicts"], enqueued=summary["enqueued"])
        return report
    finally:
        if own:
            await session.close()


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))
