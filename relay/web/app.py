"""``create_app(config)``: the relay as an aiohttp application.

Each resource is one cleanup context, set up before ``yield`` and torn down after, in reverse
order: the database and key store, then the group commit, then delivery, then links' initial
syncs, then scheduled reconciliations, then the admin API's listener. So on shutdown the admin
API stops first, then the reconciliations and the initial syncs, the couriers finish, then
pending commits, then the database closes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import structlog
from aiohttp import web

from relay.config import Config
from relay.db import links, queue
from relay.db.store import Database, GroupCommit
from relay.keys.keystore import KeyStore
from relay.keys.signatures import ReplayGuard
from relay.model.routing import Router
from relay.sites import nudge
from relay.web import admin, guard
from relay.web.appkeys import (
    CONFIG,
    COURIER_TASKS,
    COURIERS,
    DATABASE,
    GROUP_COMMIT,
    KEYS,
    LINKS,
    METRICS,
    REPLAYS,
    ROUTER,
)
from relay.web.ingest import healthz, ping, ping_protocol_1, receive_events
from relay.web.metrics import metrics_page, readyz
from relay.web.site_view import site_overview, site_user_status
from relay.work import reconcile_schedule, upkeep
from relay.work.courier import Courier
from relay.work.initial_sync import Backfiller
from relay.work.link_gate import LinkGate
from relay.work.metrics import Metrics

log = structlog.get_logger("relay.web.app")


def create_app(config: Config, metrics: Metrics | None = None) -> web.Application:
    """``metrics``: counters to carry on with (a reload keeps them); new ones if not given."""
    app = web.Application(client_max_size=config.ingest.max_body_bytes,
                          middlewares=[guard.last_resort],
                          handler_args={"keepalive_timeout": guard.IDLE_TIMEOUT,
                                        "read_bufsize": guard.READ_BUFFER})
    # Connections past the file limit's share are refused at once (relay/web/guard.py).
    guard.limit_connections(app, guard.connection_limit(
        len(config.sites) * (config.delivery.in_flight + 2)))
    app.cleanup_ctx.append(guard.quiet_accept_errors)
    app.cleanup_ctx.append(guard.give_memory_back)
    app[CONFIG] = config
    app[METRICS] = metrics or Metrics()
    app[METRICS].know(config)
    app[ROUTER] = Router(config)
    app[REPLAYS] = ReplayGuard(config.ingest.timestamp_tolerance)
    app.cleanup_ctx.extend([database_ctx, group_commit_ctx, delivery_ctx, backfill_ctx,
                            schedule_ctx, admin_ctx, nudge_ctx])
    app.router.add_post("/v1/sites/{site}/events", receive_events)
    app.router.add_post("/v1/sites/{site}/ping", ping)
    app.router.add_get("/v1/sites/{site}/ping", ping_protocol_1)
    app.router.add_post("/v1/sites/{site}/overview", site_overview)
    app.router.add_post("/v1/sites/{site}/user-status", site_user_status)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    return app


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    db = Database(config.database_path)
    await db.open()
    try:
        app[KEYS] = KeyStore(config.database_path, config.master_key_path)
    except BaseException:
        await db.close()  # its thread would keep the process alive after a failed start
        raise
    app[DATABASE] = db
    yield
    app[KEYS].close()
    await db.close()


async def group_commit_ctx(app: web.Application) -> AsyncIterator[None]:
    group = GroupCommit(app[DATABASE], app[CONFIG].ingest.commit_batch)
    group.start()
    app[GROUP_COMMIT] = group
    yield
    await group.stop()


async def delivery_ctx(app: web.Application) -> AsyncIterator[None]:
    config, db = app[CONFIG], app[DATABASE]
    # One relay process owns the database, so every lease left behind is from a dead process.
    reclaimed = await db.transaction(queue.reclaim_expired, time.time(), True,
                                      config.delivery.max_attempts)
    if reclaimed:
        log.info("leases_reclaimed", deliveries=reclaimed, at="start-up")
    # Deliveries queued on a link the configuration no longer has could never go out, and would
    # hold every later change of their people to that site behind them: dead letters, with
    # the reason (kept and replayable once the link is back), as `links remove` does.
    orphans = await db.transaction(links.retire_unconfigured, config, time.time())
    for link, count in orphans.items():
        log.warning("deliveries_of_a_removed_link_dead_lettered", link=link, deliveries=count,
                    hint=f"the link is not in {config.source}; once it is back, replay them: "
                         f"{config.command('dead list')} shows them")
    # Which links may deliver (started, both sites tested, not paused); see relay/db/links.py.
    gate = LinkGate(config, db, app[KEYS])
    await gate.refresh()
    app[LINKS] = gate
    connector = aiohttp.TCPConnector(limit_per_host=config.delivery.in_flight,
                                     keepalive_timeout=60)
    session = aiohttp.ClientSession(connector=connector,
                                    headers={"User-Agent": "UserRelay/0.1"})
    couriers = {site.id: Courier(site, app[ROUTER].links_into(site.id), config, db, app[KEYS],
                                 session, gate, app[METRICS])
                for site in config.sites.values()}
    app[COURIERS] = couriers

    def wake_all() -> None:  # a link may deliver again: its courier looks at the queue at once
        for courier in couriers.values():
            courier.wake()
    gate.on_delivering(wake_all)
    tasks = [asyncio.create_task(c.run(), name=f"courier-{s}") for s, c in couriers.items()]
    app[COURIER_TASKS] = tasks
    upkeeping = asyncio.create_task(upkeep.run(config, db, wake_all), name="upkeep")
    watch = asyncio.create_task(gate.run(), name="link-states")
    yield
    upkeeping.cancel()
    watch.cancel()
    await asyncio.gather(*(c.stop(config.delivery.shutdown_grace) for c in couriers.values()))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, upkeeping, watch, return_exceptions=True)
    await gate.stop()
    await session.close()


async def backfill_ctx(app: web.Application) -> AsyncIterator[None]:
    """Links' initial syncs (relay/work/initial_sync.py): read page by page, fed to the queue. Stops
    before the couriers; a page is queued and its cursor moved in one transaction."""
    config, couriers = app[CONFIG], app[COURIERS]
    session = aiohttp.ClientSession(headers={"User-Agent": "UserRelay/0.1"})
    runner = Backfiller(config, app[DATABASE], app[GROUP_COMMIT], app[ROUTER], app[KEYS],
                        session, app[LINKS], lambda target: couriers[target].wake())
    task = asyncio.create_task(runner.run(), name="backfill")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await session.close()


async def admin_ctx(app: web.Application) -> AsyncIterator[None]:
    """The admin API on a listener of its own (relay/web/admin.py): it starts once everything it
    reports on runs, and stops first, before the couriers do."""
    runner = await admin.start(app)
    yield
    if runner is not None:
        await runner.cleanup()


async def schedule_ctx(app: web.Application) -> AsyncIterator[None]:
    """Reconciliation on a schedule (relay/work/reconcile_schedule.py), a task per link."""
    couriers = app[COURIERS]

    def wake() -> None:
        for courier in couriers.values():
            courier.wake()
    tasks = reconcile_schedule.start(app[CONFIG], app[DATABASE], app[KEYS], app[LINKS], wake)
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def nudge_ctx(app: web.Application) -> AsyncIterator[None]:
    """Once the relay listens, nudge every site it holds a key for (relay/sites/nudge.py)."""
    config, keys = app[CONFIG], app[KEYS]

    async def after_start() -> None:
        await asyncio.sleep(nudge.AFTER_START)
        await nudge.nudge_all(config, keys, "the relay started")
    task = asyncio.create_task(after_start(), name="nudge-on-start")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
