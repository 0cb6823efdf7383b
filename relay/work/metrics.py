"""The relay's counters and gauges, in one Prometheus registry per application.

The hot paths (ingest, the courier) only bump counters in memory (one increment per request or
settled delivery, no I/O). The queue's depth is read from SQLite when ``/metrics`` is scraped, on
a read-only connection of its own in a worker thread (WAL readers never hold up the writer),
through the partial indexes that already serve ``userrelay status``. Each application has its
own ``CollectorRegistry``, so several relays in one process (as in the tests) never share a
series. Never holds a key or an event's contents: only site ids, link ids, states and counts.
The endpoints that serve them are relay/web/metrics.py.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from relay.config import Config
from relay.constants import DEAD, DONE, PENDING_STATES, READY
from relay.db import queue

# The *_created series would double every scrape's size; nothing of ours reads them.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

#: The ``site`` label of requests naming no configured site (ids cannot start with '_'), so a
#: stranger cannot grow the number of series.
UNKNOWN_SITE = "_unknown"
EVENT_OUTCOMES = ("accepted", "duplicate", "echo")
DELIVERY_OUTCOMES = ("done", "retry", "dead", "paused")
#: Upper bounds of the delivery latency histogram, in seconds, up to the default timeout.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_OUTCOME_OF_STATE = {DONE: "done", READY: "retry", DEAD: "dead"}


class Metrics:
    """The relay's counters and gauges, in one registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._requests = Counter(
            "userrelay_ingest_requests", "Requests to POST /v1/sites/{site}/events, by answer "
            "status.", ["site", "status"], registry=r)
        self._events = Counter(
            "userrelay_ingest_events", "Events received from a site: accepted, duplicate "
            "(seen before, or in a repeated request) or echo (a change the relay had applied).",
            ["site", "outcome"], registry=r)
        self._deliveries = Counter(
            "userrelay_deliveries", "Delivery attempts settled, per target site: done, retry "
            "(failed, tried again later), dead (dead-lettered) or paused (held: link paused).",
            ["target", "outcome"], registry=r)
        self._latency = Histogram(
            "userrelay_delivery_seconds", "Time of one delivery request to a site, answer read.",
            ["target"], buckets=LATENCY_BUCKETS, registry=r)
        self._depth = Gauge(
            "userrelay_queue_depth", "Deliveries pending per target site and state, read from "
            "the database when scraped.", ["target", "state"], registry=r)
        self._dead = Gauge(
            "userrelay_dead_letters", "Dead-lettered deliveries per target site, read from the "
            "database when scraped.", ["target"], registry=r)
        self._filtered = Counter(
            "userrelay_filtered", "Changes a link's rule kept from a target, by the link "
            "naming the rule and the rule (roles.outgoing, roles.incoming).",
            ["link", "rule"], registry=r)
        self._unjudged = Counter(
            "userrelay_unjudged_events", "Events from a site that a role rule applied to but "
            "could not judge (no user.roles: an older plugin); routed as without the rule.",
            ["site"], registry=r)
        self._lock = asyncio.Lock()

    def know(self, config: Config) -> None:
        """Start each configured site's series at zero, so a rate() has a baseline."""
        for site in config.sites:
            for outcome in EVENT_OUTCOMES:
                self._events.labels(site, outcome)
            for outcome in DELIVERY_OUTCOMES:
                self._deliveries.labels(site, outcome)
            self._latency.labels(site)
        for link in config.links.values():
            if link.roles_outgoing is not None:
                self._filtered.labels(link.id, "roles.outgoing")
            if link.roles_incoming is not None:
                self._filtered.labels(link.id, "roles.incoming")

    # --- hooks on the hot paths: memory only -------------------------------------------------

    def ingest_request(self, config: Config, site: str, status: int) -> None:
        self._requests.labels(site if site in config.sites else UNKNOWN_SITE, str(status)).inc()

    def ingested(self, site: str, answer: dict[str, Any], events: int, repeat: bool) -> None:
        if repeat:  # the answer is the first request's: these events were counted then
            self._events.labels(site, "duplicate").inc(events)
            return
        for outcome, key in zip(EVENT_OUTCOMES, ("accepted", "duplicates", "echoes"),
                                strict=True):
            if answer.get(key):
                self._events.labels(site, outcome).inc(answer[key])
        for kept in answer.get("filtered", []):
            self._filtered.labels(kept["link"], kept["rule"]).inc()
        if answer.get("unjudged"):
            self._unjudged.labels(site).inc(answer["unjudged"])

    def settled(self, target: str, states: list[str]) -> None:
        for state in states:
            self._deliveries.labels(target, _OUTCOME_OF_STATE.get(state, state)).inc()

    def paused(self, target: str, deliveries: int) -> None:
        self._deliveries.labels(target, "paused").inc(deliveries)

    def request_took(self, target: str, seconds: float) -> None:
        self._latency.labels(target).observe(seconds)

    # --- at scrape time ------------------------------------------------------------------------

    async def exposition(self, config: Config, accept: str) -> tuple[bytes, str]:
        """The body and its content type (the format the scraper accepts), depth read now."""
        async with self._lock:  # two scrapes at once would interleave clear() and set()
            pending, dead = await asyncio.to_thread(_read_depth, config.database_path)
            self._depth.clear()
            self._dead.clear()
            for target in sorted(set(config.sites) | {t for t, _ in pending} | set(dead)):
                for state in PENDING_STATES:
                    self._depth.labels(target, state).set(pending.get((target, state), 0))
                self._dead.labels(target).set(dead.get(target, 0))
            encode, content_type = choose_encoder(accept)
            return encode(self.registry), content_type


def _read_depth(path: Path) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        # Spelt as the partial indexes deliveries_line and deliveries_dead are, so both are used.
        pending = {(t, s): n for t, s, n in conn.execute(
            f"SELECT target, state, count(*) FROM deliveries WHERE {queue.IN_LINE} "
            "GROUP BY target, state")}
        dead = dict(conn.execute("SELECT target, count(*) FROM deliveries "
                                 f"WHERE state = '{DEAD}' GROUP BY target").fetchall())
    finally:
        conn.close()
    return pending, dead


