"""The admin API's sites and links: Test Connection, key rotation, adding, editing, starting,
pausing and removing them, an initial sync's progress and a reconciliation run.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import structlog
from aiohttp import web

from relay.config import Config, parse_duration
from relay.db import cursors, links, status
from relay.errors import (
    InvalidRequest,
    LinkNotReady,
)
from relay.keys.keystore import KeyStore
from relay.sites import provision
from relay.sites.connection_test import run_connection_test
from relay.web import admin_remove
from relay.web.admin_requests import (
    MAX_GRACE,
    MAX_REASON_CHARS,
    body_of,
    link_of,
    only_fields,
    read_db,
    relay_of,
    reload_soon,
    site_of,
)
from relay.web.appkeys import CONFIG, COURIERS, DATABASE, KEYS, LINKS
from relay.work import reconcile

log = structlog.get_logger("relay.web.admin_sites")


async def test_site(request: web.Request) -> web.Response:
    """Run the site's connection test now, record it, and answer its report."""
    relay, site = relay_of(request), site_of(request)
    only_fields(await body_of(request), set())
    tests = await read_db(request, links.site_tests)
    report = await run_connection_test(relay[CONFIG], site, relay[KEYS], tests=tests)
    await relay[DATABASE].transaction(
        links.record_test, site, report.url, report.key_id or "", report.passed,
        report.as_dict()["checks"], report.tested_at)
    await relay[LINKS].refresh()
    log.info("site_tested", site=site, passed=report.passed,
             failed=[c.name for c in report.failed], by="admin API")
    # A site's answers are quoted in the checks: mask them as log lines are.
    return web.Response(text=status.masked(json.dumps(report.as_dict())) or "",
                        content_type="application/json")


async def rotate_key(request: web.Request) -> web.Response:
    """A new key for the site, in this answer and nowhere else; the previous one stops at
    once, or is still accepted from the site for ``grace``."""
    relay, site = relay_of(request), site_of(request)
    document = await body_of(request)
    only_fields(document, {"grace"})
    try:
        grace = parse_duration(document.get("grace", 0))
    except (ValueError, OverflowError) as exc:
        raise InvalidRequest(f"grace: got {str(document.get('grace'))[:40]!r}; expected "
                             f"{exc}") from None
    if not grace <= MAX_GRACE:
        raise InvalidRequest(f"grace: got {grace:g} seconds; expected at most {MAX_GRACE:g} "
                             "(30 days)")
    config = relay[CONFIG]

    def rotate() -> tuple[str, float | None]:
        store = KeyStore(config.database_path, config.master_key_path)  # this thread's own
        try:
            return store.rotate(site, grace).secret, store.grace_until(site)
        finally:
            store.close()
    secret, until = await asyncio.to_thread(rotate)
    await relay[LINKS].refresh()
    held = sorted(lk.id for lk in config.links.values() if site in (lk.site, lk.remote))
    log.info("key_rotated", site=site, grace=grace, by="admin API")
    return web.json_response(
        {"site": site, "key": secret, "previous_key_accepted_until": until,
         "links_held_until_tested": held,
         "next": f"paste the key into the site (define( 'USERRELAY_KEY', '…' ) in wp-config.php "
                 f"or Settings > UserRelay), then test it: POST /admin/sites/{site}/test"},
        headers={"Cache-Control": "no-store"})


async def start_link(request: web.Request) -> web.Response:
    relay, link = relay_of(request), link_of(request)
    only_fields(await body_of(request), set())
    state = await relay[DATABASE].transaction(links.start, relay[CONFIG], link, time.time())
    await relay[LINKS].refresh()
    log.info("link_started", link=link, state=state.state, by="admin API")
    return web.json_response(state.as_dict())


async def pause_link(request: web.Request) -> web.Response:
    relay, link = relay_of(request), link_of(request)
    document = await body_of(request)
    only_fields(document, {"reason"})
    reason = document.get("reason") or links.ADMIN_PAUSE
    if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
        raise InvalidRequest(f"reason: got {str(reason)[:40]!r}; expected a text of at most "
                             f"{MAX_REASON_CHARS} characters")
    await relay[DATABASE].transaction(links.pause, link, reason, time.time())
    await relay[LINKS].refresh()
    state = (await read_db(request, links.read_states, relay[CONFIG]))[link]
    log.info("link_paused_by_admin", link=link, reason=reason, by="admin API")
    return web.json_response(state.as_dict())


def _link_view(link: Any) -> dict[str, Any]:
    return {"id": link.id, "site": link.site, "remote": link.remote,
            "direction": link.direction, "sync": list(link.sync),
            "outgoing": sorted(link.outgoing) if link.direction != "pull" else [],
            "incoming": sorted(link.incoming) if link.direction != "push" else [],
            "match_by": link.match_by, **provision.rule_document(link)}


async def list_sites(request: web.Request) -> web.Response:
    """``userrelay sites list``: each site, whether the relay holds its key, its last test and
    its links; never a key."""
    config = relay_of(request)[CONFIG]

    def read(conn: Any) -> dict[str, Any]:
        keyed = {r[0] for r in conn.execute("SELECT site FROM site_keys")}
        tests = {r[0]: (r[1], bool(r[2])) for r in conn.execute(
            "SELECT site, tested_at, passed FROM site_tests")}
        return {"sites": [
            {"id": s.id, "label": s.label, "url": s.url, "key": s.id in keyed,
             "last_test": None if s.id not in tests else
             {"at": tests[s.id][0], "passed": tests[s.id][1]},
             "links": [lk.id for lk in config.links.values() if s.id in (lk.site, lk.remote)]}
            for s in config.sites.values()]}
    return web.json_response(await read_db(request, read))


async def remove_site(request: web.Request) -> web.Response:
    """``userrelay sites remove``: see relay/web/admin_remove.py."""
    relay, site = relay_of(request), site_of(request)
    document = await body_of(request)
    return await admin_remove.remove_site(relay, site, document, lambda: reload_soon(relay))


async def remove_link(request: web.Request) -> web.Response:
    """``userrelay links remove``: see relay/web/admin_remove.py."""
    relay, link = relay_of(request), link_of(request)
    document = await body_of(request)
    return await admin_remove.remove_link(relay, link, document, lambda: reload_soon(relay))


async def get_config(request: web.Request) -> web.Response:
    """What is configured, for a client building forms: sites and links, never a key."""
    config = relay_of(request)[CONFIG]

    def untested(conn: Any) -> dict[str, str | None]:
        ids, tests = links.key_ids(conn), links.site_tests(conn)
        return {s: links.missing_test(config, s, ids.get(s), tests.get(s)) for s in config.sites}
    missing = await read_db(request, untested)
    return web.json_response({
        "source": config.source, "relay_url": config.relay_url,
        "public_url": config.public_url or None,
        "sites": {s.id: {"id": s.id, "label": s.label, "url": s.url,
                         "tested": missing[s.id] is None, "missing": missing[s.id]}
                  for s in config.sites.values()},
        "links": {lk.id: _link_view(lk) for lk in config.links.values()}})


async def add_site(request: web.Request) -> web.Response:
    """Add a site to the configuration file and make its key, shown in this answer only;
    then reload the relay."""
    relay = relay_of(request)
    document = await body_of(request)
    added = await asyncio.to_thread(provision.add_site, relay[CONFIG], document)
    log.info("site_added", site=added.site["id"], url=added.site["url"], by="admin API")
    answer = added.as_dict()
    answer["note"] = provision.loopback_note(added.relay_url, added.site["url"])
    answer["reload"] = reload_soon(relay)
    return web.json_response(answer, status=201, headers={"Cache-Control": "no-store"})


async def add_link(request: web.Request) -> web.Response:
    """Add a link to the configuration file, start it when asked (both sites must have
    passed their connection test), then reload the relay."""
    relay = relay_of(request)
    document = await body_of(request)
    start = document.pop("start", False)
    if not isinstance(start, bool):
        raise InvalidRequest(f"start: got {str(start)[:40]!r}; expected true or false")
    file, new_config, link_id = await asyncio.to_thread(provision.add_link, relay[CONFIG],
                                                        document)
    state = None
    if start:  # recorded before the file is written: a link that cannot start is not added
        state = await relay[DATABASE].transaction(links.start, new_config, link_id, time.time())
    await asyncio.to_thread(file.write)
    log.info("link_added", link=link_id, started=bool(start), by="admin API")
    return web.json_response({"link": _link_view(new_config.links[link_id]),
                              "state": state.as_dict() if state else None,
                              "reload": reload_soon(relay)}, status=201)


async def edit_link(request: web.Request) -> web.Response:
    relay, link = relay_of(request), link_of(request)
    document = await body_of(request)
    file = await asyncio.to_thread(provision.edit_link, relay[CONFIG], link, document)
    await asyncio.to_thread(file.write)
    after = file.validate(file.text).links[link]
    log.info("link_edited", link=link, direction=after.direction, by="admin API")
    return web.json_response({"link": _link_view(after), "reload": reload_soon(relay)})


async def link_progress(request: web.Request) -> web.Response:
    relay, link = relay_of(request), link_of(request)
    config = relay[CONFIG]

    def read(conn: Any) -> dict[str, Any]:
        return {"link": link, "state": links.read_states(conn, config)[link].as_dict(),
                "backfill": backfill_progress(conn, config, link)}
    return web.json_response(await read_db(request, read))


def backfill_progress(conn: Any, config: Config, link: str) -> dict[str, Any] | None:
    return cursors.progress(conn, config, link)


async def drift_link(request: web.Request) -> web.Response:
    """Compare the link's two sites now (``userrelay drift``); ``repair`` queues the fixes."""
    relay, link = relay_of(request), link_of(request)
    document = await body_of(request)
    only_fields(document, {"repair"})
    repair = document.get("repair", False)
    if not isinstance(repair, bool):
        raise InvalidRequest(f"repair: got {str(repair)[:40]!r}; expected true or false")
    state = (await read_db(request, links.read_states, relay[CONFIG]))[link]
    if state.missing:
        raise LinkNotReady(link, list(state.missing))
    db = relay[DATABASE]
    report = await reconcile.reconcile(relay[CONFIG], link, relay[KEYS], db.call,
                                       db.transaction, repair=repair)
    if report.enqueued:
        for courier in relay[COURIERS].values():
            courier.wake()
    log.info("reconcile_compared", link=link, repair=repair, by="admin API", **report.summary())
    return web.Response(text=status.masked(json.dumps(report.as_dict())) or "",
                        content_type="application/json")
