"""Typed keys of everything the aiohttp application holds, in one place."""

from __future__ import annotations

from aiohttp import web

from relay.config import Config
from relay.keystore import KeyStore
from relay.routing import Router
from relay.store import Database, GroupCommit

CONFIG = web.AppKey("config", Config)
DATABASE = web.AppKey("database", Database)
KEYS = web.AppKey("keys", KeyStore)
ROUTER = web.AppKey("router", Router)
GROUP_COMMIT = web.AppKey("group_commit", GroupCommit)
# Set by delivery_ctx: one courier per target site, woken after new deliveries are committed.
COURIERS = web.AppKey("couriers", dict)
