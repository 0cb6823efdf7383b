"""Typed keys of everything the aiohttp application holds, in one place."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

from relay.config import Config
from relay.db.store import Database, GroupCommit
from relay.keys.keystore import KeyStore
from relay.keys.signatures import ReplayGuard
from relay.model.routing import Router
from relay.work.link_gate import LinkGate
from relay.work.metrics import Metrics

CONFIG = web.AppKey("config", Config)
DATABASE = web.AppKey("database", Database)
KEYS = web.AppKey("keys", KeyStore)
ROUTER = web.AppKey("router", Router)
GROUP_COMMIT = web.AppKey("group_commit", GroupCommit)
# Set by delivery_ctx: one courier per target site, woken after new deliveries are committed.
COURIERS = web.AppKey("couriers", dict)
# Set by delivery_ctx: which links may deliver; ``await app[LINKS].refresh()`` after changing
# a link's state or a site's test in this process, so the couriers see it at once.
LINKS = web.AppKey("links", LinkGate)
# Set by delivery_ctx: the couriers' tasks, which /readyz and the watchdog check are running.
COURIER_TASKS: web.AppKey[list[asyncio.Task[None]]] = web.AppKey("courier_tasks")
# The counters and gauges behind /metrics; kept across a reload (see create_app).
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
# The webhook-ids of signed pings accepted within the timestamp window: each is taken once.
REPLAYS = web.AppKey("replays", ReplayGuard)
# Set by admin_ctx when the admin API listens: its address (http://host:port).
ADMIN_URL = web.AppKey("admin_url", str)
# Set by the daemon (relay/daemon/process.py): asks it to read the configuration file again, as
# SIGHUP does; absent when the app runs without the daemon (tests).
RELOAD: web.AppKey[Callable[[], None]] = web.AppKey("reload")
