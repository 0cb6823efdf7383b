"""Delivery: one courier per target site sends its due deliveries, signed, in batches.

A courier claims due heads (with a lease), posts them to the site's plugin as one signed
request, reads the answer per event and settles every outcome in one transaction, shielded
from cancellation so a shutdown cannot lose it. A failure of the whole request (the site is
down, throttling, timing out) holds the whole target until the retry is due, rather than
burning every queued delivery's attempts against a site that is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aiohttp
import structlog

from relay.config import Config, Site
from relay.constants import DEAD, DONE, READY
from relay.db import links, queue
from relay.db.queue import Claimed, Outcome
from relay.db.store import Database
from relay.keys.crypto import SiteKey
from relay.keys.keystore import KeyStore
from relay.model import answers
from relay.model.answers import Kind
from relay.model.retry import RetryPolicy
from relay.sites import nudge
from relay.sites.client import PluginClient, plugin_url
from relay.work.link_gate import LinkGate
from relay.work.metrics import Metrics

log = structlog.get_logger("relay.work.courier")
IDLE_POLL = 5.0  # seconds between looks at the queue when nothing woke the courier
NO_KEY_WAIT = 30.0  # seconds a target without a key is left alone before the next look


class Courier:
    """Delivers everything queued for one target site."""

    def __init__(self, site: Site, links: list[str], config: Config, db: Database,
                 keys: KeyStore, session: aiohttp.ClientSession, gate: LinkGate,
                 metrics: Metrics | None = None) -> None:
        self.site = site
        self._metrics = metrics or Metrics()
        self._links = links
        self._db, self._keys, self._session, self._gate = db, keys, session, gate
        self._timeout = config.delivery.timeout
        self._batch_size = config.delivery.batch_size
        self._lease = config.delivery.lease
        self._policy = RetryPolicy(config.delivery.retry_schedule, config.delivery.jitter,
                                   config.delivery.max_attempts, config.delivery.max_age,
                                   config.delivery.max_retry_after)
        self._slots = asyncio.Semaphore(config.delivery.in_flight)
        self._wakeup = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._held_until = 0.0
        self._failing = False  # the last request got no answer, or a retryable one
        self._nudges: set[asyncio.Task[bool]] = set()
        self._url = plugin_url(site.url, "events")
        self._stopping = False
        self.counters = {"done": 0, "retried": 0, "dead": 0, "requests": 0}

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        while not self._stopping:
            now = time.time()
            if self._held_until > now:
                await self._sleep(self._held_until - now)
                continue
            await self._slots.acquire()
            if self._stopping:
                self._slots.release()
                break
            self._wakeup.clear()
            links = self._gate.deliverable(self._links)  # started, tested and not paused
            if not links:  # nothing may go to this site now: wait for a wake-up (or a look)
                self._slots.release()
                await self._sleep(IDLE_POLL)
                continue
            batch = await self._db.transaction(queue.claim, self.site.id, links,
                                               self._batch_size, now, self._lease)
            if not batch:
                self._slots.release()
                due = await self._db.call(queue.next_due, self.site.id, links)
                await self._sleep(IDLE_POLL if due is None else min(max(due - now, 0.01),
                                                                   IDLE_POLL))
                continue
            task = asyncio.create_task(self._deliver(batch), name=f"deliver-{self.site.id}")
            self._in_flight.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("courier_failed", target=self.site.id, error=repr(task.exception()))

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout=seconds)

    async def stop(self, grace: float) -> None:
        """Stop claiming; give in-flight requests ``grace`` seconds, then cut them off."""
        self._stopping = True
        self._wakeup.set()
        if self._in_flight:
            _, late = await asyncio.wait(set(self._in_flight), timeout=grace)
            for task in late:
                task.cancel()  # its lease expires and the delivery goes out again later
            await asyncio.gather(*late, return_exceptions=True)

    async def _deliver(self, batch: list[Claimed]) -> None:
        """Send a claimed batch and settle it; whatever goes wrong in here, the batch does not
        stay leased: an unexpected error is a failed attempt for each of its events."""
        try:
            await self._send(batch)
        except asyncio.CancelledError:
            raise  # stopping: the lease expires and the batch goes out again
        except Exception as exc:
            log.exception("courier_error", target=self.site.id, deliveries=len(batch))
            try:
                await self._retry_all(batch, None, f"the relay failed while delivering: "
                                      f"{type(exc).__name__}: {exc}", None)
            except Exception:
                # The database itself fails: the lease expires and upkeep reclaims it.
                log.exception("courier_settle_failed", target=self.site.id,
                              deliveries=len(batch))

    async def _send(self, batch: list[Claimed]) -> None:
        now = time.time()
        key = self._keys.get(self.site.id)
        if key is None:  # not a fault of the events: keep them, look again in a while
            log.error("no_key", target=self.site.id,
                      hint=f"run 'userrelay keys generate {self.site.id}'")
            self._held_until = now + NO_KEY_WAIT
            await asyncio.shield(self._db.transaction(queue.release, batch, now + NO_KEY_WAIT))
            return
        links = {d.link for d in batch}
        if len(self._gate.deliverable(links)) < len(links):
            # Held since the claim (a new key the site cannot know yet, a pause): give it back.
            await asyncio.shield(self._db.transaction(queue.release, batch, now))
            return
        client = PluginClient(self.site.id, self.site.url, key, self._session, self._timeout,
                              self.site.ca_file)
        self.counters["requests"] += 1
        sent = time.monotonic()
        try:
            reply = await client.call("events", events=[{"id": str(d.id), **d.payload}
                                                        for d in batch])
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._metrics.request_took(self.site.id, time.monotonic() - sent)
            self._failing = True
            await self._retry_all(batch, None, client.unreachable("events", exc), None)
            return
        self._metrics.request_took(self.site.id, time.monotonic() - sent)
        verdict = answers.judge([str(d.id) for d in batch], reply.status, reply.headers,
                                reply.body, now)
        if verdict.kind is Kind.RETRY or (verdict.kind is Kind.RESULTS
                                          and not verdict.results):
            self._failing = True
        elif self._failing:  # the site answers again: its outbox may be waiting on a backoff
            self._failing = False
            self._nudge(key)
        if verdict.kind is Kind.RESULTS:
            await self._settle([self._outcome(d, verdict.results.get(str(d.id)))
                                for d in batch])
        elif verdict.kind is Kind.RETRY:
            await self._retry_all(batch, verdict.status, verdict.error, verdict.retry_after)
        elif verdict.kind is Kind.PAUSE:
            status = verdict.status or 0
            await self._pause(batch, _pause_reason(self.site, self._url, status, verdict.error)
                              + ("" if status == 410 else reply.protocol_hint()))
        elif len(batch) > 1:
            await self._split(batch, verdict)
        else:
            await self._settle([Outcome(batch[0], DEAD, verdict.status, verdict.error)])

    def _nudge(self, key: SiteKey) -> None:
        """Tell the site, in the background, that it can reach the relay again."""
        task = asyncio.create_task(nudge.nudge(self._session, self.site, key,
                                               "its deliveries succeed again"))
        self._nudges.add(task)
        task.add_done_callback(self._nudges.discard)

    async def _split(self, batch: list[Claimed], verdict: answers.Verdict) -> None:
        """The site refused the request as a whole: something in it (an event it cannot
        read, a body too large) poisons it. Send each half on its own, and so on, until the
        offending events are alone: only they are dead-lettered. It is all one attempt."""
        log.warning("batch_refused", target=self.site.id, events=len(batch),
                    status=verdict.status, error=verdict.error,
                    next=f"sending it again as two requests of {len(batch) // 2} and "
                         f"{len(batch) - len(batch) // 2}")
        half = len(batch) // 2
        for part in (batch[:half], batch[half:]):
            # The halves take a request each: the lease must outlast them.
            await asyncio.shield(self._db.transaction(queue.extend_lease, part,
                                                      time.time() + self._lease))
            await self._send(part)

    def _outcome(self, d: Claimed, result: answers.Result | None) -> Outcome:
        """What becomes of one delivery the site answered with results."""
        if result is None:
            return self._retry(d, None, "the site's answer had no result for it (not applied)",
                               None)
        if result.applied:
            return Outcome(d, DONE, result.status, None, None, result.user_id)
        error = result.error or f"site answered {result.status}"
        if result.retry:
            return self._retry(d, result.status, error, result.retry_after)
        return Outcome(d, DEAD, result.status, error)

    def _retry(self, d: Claimed, status: int | None, error: str,
               retry_after: float | None) -> Outcome:
        now = time.time()
        given_up = self._policy.gives_up(d.attempts, now - d.created_at)
        if given_up:
            return Outcome(d, DEAD, status, f"{given_up}; last: {error}")
        return Outcome(d, READY, status, error,
                       now + self._policy.delay(d.attempts, retry_after))

    async def _retry_all(self, batch: list[Claimed], status: int | None, error: str,
                         retry_after: float | None) -> None:
        outcomes = [self._retry(d, status, error, retry_after) for d in batch]
        retries = [o.run_at for o in outcomes if o.run_at is not None]
        if retries:
            self._held_until = max(self._held_until, min(retries))
        await self._settle(outcomes)

    async def _pause(self, batch: list[Claimed], reason: str) -> None:
        paused = sorted({d.link for d in batch})
        for link in paused:
            self._gate.hold(link, reason)
        log.error("link_paused", target=self.site.id, links=paused, reason=reason)
        self._metrics.paused(self.site.id, len(batch))

        def pause(conn: Any) -> None:
            for link in paused:
                links.pause(conn, link, reason, time.time())
            queue.release(conn, batch, time.time())

        try:
            await asyncio.shield(self._db.transaction(pause))
        finally:  # stored (or failed, and the next look at the states says so): stop holding
            for link in paused:
                self._gate.stored(link)

    async def _settle(self, outcomes: list[Outcome]) -> None:
        await asyncio.shield(self._db.transaction(queue.settle, outcomes, time.time()))
        self._metrics.settled(self.site.id, [o.state for o in outcomes])
        self.wake()  # settling moved lines on or set a retry time: look at the queue again
        for o in outcomes:
            d = o.delivery
            fields = {"site": d.source, "target": d.target, "event_id": d.payload["origin"]
                      ["event_id"], "delivery": d.id, "attempt": d.attempts, "status": o.status}
            if o.state == DONE:
                self.counters["done"] += 1
                log.debug("delivered", **fields)
            elif o.state == READY:
                self.counters["retried"] += 1
                log.warning("delivery_retry", **fields, error=o.error,
                            retry_in=round((o.run_at or 0) - time.time(), 3))
            else:
                self.counters["dead"] += 1
                log.error("dead_lettered", **fields, error=o.error)


def _pause_reason(site: Site, url: str, status: int, location: str) -> str:
    if status == 410:
        return f"site {site.id!r} answered 410 Gone at {url}: it asked us to stop sending"
    if status in (401, 403):
        return (f"site {site.id!r} refused our signature ({status}) at {url}: the key pasted "
                f"into the site differs from the relay's; paste the current key or generate one")
    if status == 404:
        return (f"site {site.id!r} answered 404 at {url}: is the UserRelay plugin active and "
                "the site URL right?")
    return f"site {site.id!r} redirected {url} to {location or '?'} ({status}): fix the site URL"
