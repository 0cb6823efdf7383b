"""The admin API: status, dead letters, and actions on sites and links, on a listener of its own.

It listens on ``admin.host``:``admin.port`` (loopback by default), apart from the listener the
sites reach, and answers only requests bearing the admin token (``Authorization: Bearer …``,
compared in constant time); anything else gets 401. The token comes from ``admin.token_file``
or the environment variable ``USERRELAY_ADMIN_TOKEN``; with neither, the admin API does not
listen at all. The token is never logged, echoed, or put into an error message.

    GET  /admin/status                   what ``userrelay status --json`` shows
    GET  /admin/dead?target=b&since=2h   dead letters (filter as query parameters, and limit)
    POST /admin/dead/replay              {"target": "b"} | {"ids": [12]} | {"all": true} …
    POST /admin/dead/purge               the same filters
    POST /admin/sites/{site}/test        the connection test (relay/sites/connection_test.py)
    POST /admin/sites/{site}/rotate-key  {"grace": "30m"}: a new key, in this answer only
    POST /admin/links/{link}/start       make a tested link active, or resume a paused one
    POST /admin/links/{link}/pause       {"reason": "…"}: stop delivering (events still queue)
    GET  /admin/config                   the sites and links as configured (never a key)
    POST /admin/sites                    {"id", "url", "label"}: add a site; its key, once
    POST /admin/links                    {"site", "remote", "direction", …, "start": true}
    POST /admin/links/{link}/edit        {"direction", "outgoing", "incoming", …}
    GET  /admin/links/{link}/progress    the initial sync: done of total, rate, time left
    POST /admin/links/{link}/drift       {"repair": false}: compare the link's two sites
    GET  /admin/history                  the last hour's events in, deliveries out and lag
    POST /admin/reload                   read the configuration file again (as SIGHUP)

Adding a site or a link, or editing a link, writes the configuration file (relay/sites/provision.py,
keeping its comments) and then reloads the relay, when it runs as ``userrelay serve``; the
admin listener then restarts with it, so a client may see one refused connection. The web
console (relay/web/console/) is served on the same listener under ``/console/``, with its own
sign-in; it is a client of this API.

Reads use a connection of their own on a worker thread, so a large status never holds up the
writer; writes go through the relay's one writing connection, as everything else does.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from aiohttp import web

from relay.config import Config, is_loopback, parse_duration
from relay.db import cursors, deadletters, links, status
from relay.db.store import connect_sync
from relay.errors import (
    ConfigError,
    InvalidEvent,
    InvalidRequest,
    KeyStoreError,
    LinkNotReady,
    RequestRejected,
    SetupRefused,
    StoreUnavailable,
    UnknownLink,
    UnknownSite,
    UserRelayError,
)
from relay.keys.keystore import KeyStore
from relay.model import events
from relay.sites import provision
from relay.sites.connection_test import run_connection_test
from relay.web import admin_remove, history
from relay.web.appkeys import ADMIN_URL, CONFIG, COURIERS, DATABASE, KEYS, LINKS, RELOAD
from relay.web.console import pages
from relay.web.console import routes as console
from relay.work import reconcile

log = structlog.get_logger("relay.web.admin")
T = TypeVar("T")

TOKEN_ENV = "USERRELAY_ADMIN_TOKEN"  # noqa: S105 - the variable's name, not a token
MIN_TOKEN_LENGTH = 32
#: The longest grace a key rotation may give the previous key (seconds), and the longest
#: reason for a pause an admin may give.
MAX_GRACE = 30 * 86400.0
MAX_REASON_CHARS = 1000
#: How long a stopping admin listener lets a request in progress finish (seconds).
SHUTDOWN_GRACE = 5.0
#: Seconds between a change written by the admin API and the reload it asks for.
RELOAD_DELAY = 1.0
#: The relay application whose database, configuration and couriers the admin API uses.
RELAY = web.AppKey("relay", web.Application)
TOKEN = web.AppKey("admin_token", str)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def load_token(config: Config) -> str | None:
    """The admin token from ``admin.token_file``, else from the environment; None if neither.

    A token that cannot be read or is too weak is a ``ConfigError`` that never quotes it.
    """
    if config.admin.token_file:
        path = config.base_dir / config.admin.token_file
        where = f"admin.token_file ({path})"
        try:
            token: str = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise ConfigError(config.source, [f"{where}: cannot read the admin token: "
                                              f"{reason}"]) from None
    else:
        where = f"the environment variable {TOKEN_ENV}"
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            return None
    if len(token) < MIN_TOKEN_LENGTH or not token.isascii() or not token.isprintable() \
            or any(c.isspace() for c in token):
        raise ConfigError(config.source, [
            f"{where}: the admin token must be one line of at least {MIN_TOKEN_LENGTH} printable "
            "ASCII characters without spaces, e.g. made with: openssl rand -hex 32"])
    return token


async def start(relay: web.Application) -> web.AppRunner | None:
    """Start the admin listener for ``relay``; None (and a log line saying so) when no token
    is configured. Raises ``UserRelayError`` when it cannot listen."""
    config = relay[CONFIG]
    token = load_token(config)
    if token is None:
        log.info("admin_disabled", reason=f"no admin token: set admin.token_file in "
                 f"{config.source} or the environment variable {TOKEN_ENV}")
        return None
    runner = web.AppRunner(create_admin_app(relay, token), access_log=None,
                           handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE)
    await runner.setup()
    host, port = config.admin.host, config.admin.port
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise UserRelayError(f"cannot listen on {host}:{port} for the admin API (admin.host, "
                             f"admin.port): {exc.strerror or exc}") from None
    bound_host, bound_port = runner.addresses[0][:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    relay[ADMIN_URL] = f"http://{shown}:{bound_port}"
    log.info("admin_started", host=bound_host, port=bound_port)
    if not is_loopback(host):
        log.warning("admin_not_loopback", host=host, hint="the admin API speaks plain HTTP: "
                    "keep admin.host on 127.0.0.1 and reach it through SSH or a TLS proxy")
    return runner


def create_admin_app(relay: web.Application, token: str) -> web.Application:
    admin = web.Application(middlewares=[_require_token], client_max_size=64 * 1024)
    admin[RELAY] = relay
    admin[TOKEN] = token
    admin.router.add_get("/admin/status", get_status)
    admin.router.add_get("/admin/dead", list_dead)
    admin.router.add_post("/admin/dead/replay", replay_dead)
    admin.router.add_post("/admin/dead/purge", purge_dead)
    admin.router.add_post("/admin/sites/{site}/test", test_site)
    admin.router.add_post("/admin/sites/{site}/rotate-key", rotate_key)
    admin.router.add_post("/admin/links/{link}/start", start_link)
    admin.router.add_post("/admin/links/{link}/pause", pause_link)
    admin.router.add_get("/admin/config", get_config)
    admin.router.add_post("/admin/sites", add_site)
    admin.router.add_post("/admin/links", add_link)
    admin.router.add_post("/admin/links/{link}/edit", edit_link)
    admin.router.add_get("/admin/links/{link}/progress", link_progress)
    admin.router.add_post("/admin/links/{link}/drift", drift_link)
    admin.router.add_get("/admin/history", get_history)
    admin.router.add_post("/admin/reload", reload_config)
    admin.router.add_get("/admin/sites", list_sites)
    admin.router.add_post("/admin/sites/{site}/remove", remove_site)
    admin.router.add_post("/admin/links/{link}/remove", remove_link)
    admin.cleanup_ctx.append(history.sampling(relay))
    admin.add_subapp(pages.PREFIX, console.create_console_app(relay, token))
    return admin


@web.middleware
async def _require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request bears the token, or gets 401; then our errors map to their status.

    The console's pages (a sub-application) have a sign-in and a session of their own."""
    if console.is_console(request):
        return await handler(request)
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    expected = request.app[TOKEN].encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode("utf-8", "surrogateescape"), expected):
        log.warning("admin_unauthorized", method=request.method, path=request.path,
                    remote=request.remote,
                    reason="wrong token" if presented else "no bearer token")
        return web.json_response(
            {"error": "the admin API needs the admin token: Authorization: Bearer <token>"},
            status=401, headers={"WWW-Authenticate": 'Bearer realm="userrelay-admin"'})
    try:
        return await handler(request)
    except RequestRejected as exc:
        log.warning("admin_request_rejected", path=request.path, status=exc.status,
                    reason=exc.message)
        answer: dict[str, Any] = {"error": exc.message}
        if isinstance(exc, provision.FieldRefused):
            answer.update(field=exc.field, reason=exc.reason)
        return web.json_response(answer, status=exc.status)
    except LinkNotReady as exc:
        log.warning("admin_request_rejected", path=request.path, status=409, reason=str(exc))
        return web.json_response({"error": str(exc), "missing": exc.missing}, status=409)
    except SetupRefused as exc:
        log.warning("admin_request_rejected", path=request.path, status=409, reason=str(exc))
        return web.json_response({"error": str(exc), "field": None, "reason": str(exc)},
                                 status=409)
    except KeyStoreError as exc:
        log.error("admin_request_failed", path=request.path, reason=str(exc))
        return web.json_response({"error": str(exc)}, status=500)
    except (StoreUnavailable, sqlite3.Error) as exc:
        log.error("admin_request_failed", path=request.path, reason=str(exc))
        return web.json_response({"error": f"the database failed: {exc}; try again later"},
                                 status=503)
    except web.HTTPException:
        raise  # aiohttp's own answers (405, 413, ...)
    except Exception:  # a fault of ours: its traceback goes to the log, not to the caller
        log.exception("admin_request_crashed", method=request.method, path=request.path)
        return web.json_response({"error": "the relay failed to answer this request; its log "
                                  "says why"}, status=500)


def _relay(request: web.Request) -> web.Application:
    return request.app[RELAY]


async def _read(request: web.Request, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(connection, *args)`` on a reading connection of its own, off the loop."""
    path = _relay(request)[CONFIG].database_path

    def read() -> T:
        conn = connect_sync(path)
        try:
            return fn(conn, *args)
        finally:
            conn.close()
    return await asyncio.to_thread(read)


async def _body(request: web.Request) -> dict[str, Any]:
    body = await request.read()
    if not body:
        return {}
    try:
        document = json.loads(body)  # ValueError covers UnicodeDecodeError
        events.check_values(document, "")  # no text SQLite cannot store, no NaN, no 2^64
    except (ValueError, RecursionError):
        raise InvalidRequest("the body is not JSON; send an object such as "
                             "{\"target\": \"shop\"}") from None
    except InvalidEvent as exc:
        raise InvalidRequest(exc.message) from None
    if not isinstance(document, dict):
        raise InvalidRequest("the body must be a JSON object such as {\"target\": \"shop\"}")
    return document


async def get_status(request: web.Request) -> web.Response:
    snapshot = await _read(request, status.snapshot, _relay(request)[CONFIG])
    return web.json_response(snapshot)


async def list_dead(request: web.Request) -> web.Response:
    query = dict(request.query)
    flt = deadletters.parse_filter(query, _relay(request)[CONFIG], allow=frozenset({"limit"}))
    limit = deadletters.parse_limit(query.get("limit"))

    def read(conn: Any) -> tuple[int, list[dict[str, Any]]]:
        return deadletters.count(conn, flt), deadletters.list_dead(conn, flt, limit)
    total, letters = await _read(request, read)
    return web.json_response({"count": total, "dead_letters": letters})


async def replay_dead(request: web.Request) -> web.Response:
    relay = _relay(request)
    flt = deadletters.parse_filter(await _body(request), relay[CONFIG])
    deadletters.require_choice(flt, "replay")
    replayed: dict[str, list[int]] = {}
    for batch in await _read(request, deadletters.in_batches, flt):
        done = await relay[DATABASE].transaction(deadletters.replay, batch, time.time())
        for target, ids in done.items():
            replayed.setdefault(target, []).extend(ids)
            relay[COURIERS][target].wake()
    ids = sorted(i for batch in replayed.values() for i in batch)
    log.info("dead_letters_replayed", deliveries=len(ids),
             targets={t: len(b) for t, b in replayed.items()}, by="admin API")
    return web.json_response({"replayed": len(ids), "deliveries": ids})


async def purge_dead(request: web.Request) -> web.Response:
    relay = _relay(request)
    flt = deadletters.parse_filter(await _body(request), relay[CONFIG])
    deadletters.require_choice(flt, "purge")
    purged = await relay[DATABASE].transaction(deadletters.purge, flt)
    log.info("dead_letters_purged", deliveries=purged, by="admin API",
             filter=json.dumps(_described(flt)))
    return web.json_response({"purged": purged})


def _site(request: web.Request) -> str:
    config = _relay(request)[CONFIG]
    site = request.match_info["site"]
    if site not in config.sites:
        raise UnknownSite(f"no site {site!r} is configured; configured sites: "
                          f"{', '.join(config.sites) or '(none)'}")
    return site


def _link(request: web.Request) -> str:
    config = _relay(request)[CONFIG]
    link = request.match_info["link"]
    if link not in config.links:
        raise UnknownLink(f"no link {link!r} is configured; configured links: "
                          f"{', '.join(config.links) or '(none)'}")
    return link


def _fields(document: dict[str, Any], allowed: set[str]) -> None:
    for key in document:
        if key not in allowed:
            raise InvalidRequest(f"{key}: unknown; expected "
                                 f"{', '.join(sorted(allowed)) or 'an empty body'}")


async def test_site(request: web.Request) -> web.Response:
    """Run the site's connection test now, record it, and answer its report."""
    relay, site = _relay(request), _site(request)
    _fields(await _body(request), set())
    tests = await _read(request, links.site_tests)
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
    relay, site = _relay(request), _site(request)
    document = await _body(request)
    _fields(document, {"grace"})
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
    relay, link = _relay(request), _link(request)
    _fields(await _body(request), set())
    state = await relay[DATABASE].transaction(links.start, relay[CONFIG], link, time.time())
    await relay[LINKS].refresh()
    log.info("link_started", link=link, state=state.state, by="admin API")
    return web.json_response(state.as_dict())


async def pause_link(request: web.Request) -> web.Response:
    relay, link = _relay(request), _link(request)
    document = await _body(request)
    _fields(document, {"reason"})
    reason = document.get("reason") or links.ADMIN_PAUSE
    if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
        raise InvalidRequest(f"reason: got {str(reason)[:40]!r}; expected a text of at most "
                             f"{MAX_REASON_CHARS} characters")
    await relay[DATABASE].transaction(links.pause, link, reason, time.time())
    await relay[LINKS].refresh()
    state = (await _read(request, links.read_states, relay[CONFIG]))[link]
    log.info("link_paused_by_admin", link=link, reason=reason, by="admin API")
    return web.json_response(state.as_dict())


def _described(flt: deadletters.Filter) -> dict[str, Any]:
    return {k: v for k, v in (("ids", list(flt.ids)), ("source", flt.source),
                              ("target", flt.target), ("since", flt.since),
                              ("until", flt.until), ("all", flt.everything)) if v}


def _reload(relay: web.Application) -> str:
    """Ask the daemon to read its configuration file again; what the answer says of it."""
    reload = relay.get(RELOAD)
    if reload is None:
        return ("needed: this relay does not run as `userrelay serve`; reload it "
                "(systemctl reload userrelay)")
    # A moment later: the answer, and the page a browser loads right after it, go out before
    # the admin listener restarts with the new app.
    asyncio.get_running_loop().call_later(RELOAD_DELAY, reload)
    return "started"


def _link_view(link: Any) -> dict[str, Any]:
    return {"id": link.id, "site": link.site, "remote": link.remote,
            "direction": link.direction, "sync": list(link.sync),
            "outgoing": sorted(link.outgoing) if link.direction != "pull" else [],
            "incoming": sorted(link.incoming) if link.direction != "push" else [],
            "match_by": link.match_by}


async def list_sites(request: web.Request) -> web.Response:
    """``userrelay sites list``: each site, whether the relay holds its key, its last test and
    its links; never a key."""
    config = _relay(request)[CONFIG]

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
    return web.json_response(await _read(request, read))


async def remove_site(request: web.Request) -> web.Response:
    """``userrelay sites remove``: see relay/web/admin_remove.py."""
    relay, site = _relay(request), _site(request)
    document = await _body(request)
    return await admin_remove.remove_site(relay, site, document, lambda: _reload(relay))


async def remove_link(request: web.Request) -> web.Response:
    """``userrelay links remove``: see relay/web/admin_remove.py."""
    relay, link = _relay(request), _link(request)
    document = await _body(request)
    return await admin_remove.remove_link(relay, link, document, lambda: _reload(relay))


async def get_config(request: web.Request) -> web.Response:
    """What is configured, for a client building forms: sites and links, never a key."""
    config = _relay(request)[CONFIG]

    def untested(conn: Any) -> dict[str, str | None]:
        ids, tests = links.key_ids(conn), links.site_tests(conn)
        return {s: links.missing_test(config, s, ids.get(s), tests.get(s)) for s in config.sites}
    missing = await _read(request, untested)
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
    relay = _relay(request)
    document = await _body(request)
    added = await asyncio.to_thread(provision.add_site, relay[CONFIG], document)
    log.info("site_added", site=added.site["id"], url=added.site["url"], by="admin API")
    answer = added.as_dict()
    answer["note"] = provision.loopback_note(added.relay_url, added.site["url"])
    answer["reload"] = _reload(relay)
    return web.json_response(answer, status=201, headers={"Cache-Control": "no-store"})


async def add_link(request: web.Request) -> web.Response:
    """Add a link to the configuration file, start it when asked (both sites must have
    passed their connection test), then reload the relay."""
    relay = _relay(request)
    document = await _body(request)
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
                              "reload": _reload(relay)}, status=201)


async def edit_link(request: web.Request) -> web.Response:
    relay, link = _relay(request), _link(request)
    document = await _body(request)
    file = await asyncio.to_thread(provision.edit_link, relay[CONFIG], link, document)
    await asyncio.to_thread(file.write)
    after = file.validate(file.text).links[link]
    log.info("link_edited", link=link, direction=after.direction, by="admin API")
    return web.json_response({"link": _link_view(after), "reload": _reload(relay)})


async def link_progress(request: web.Request) -> web.Response:
    relay, link = _relay(request), _link(request)
    config = relay[CONFIG]

    def read(conn: Any) -> dict[str, Any]:
        return {"link": link, "state": links.read_states(conn, config)[link].as_dict(),
                "backfill": backfill_progress(conn, config, link)}
    return web.json_response(await _read(request, read))


def backfill_progress(conn: Any, config: Config, link: str) -> dict[str, Any] | None:
    return cursors.progress(conn, config, link)


async def drift_link(request: web.Request) -> web.Response:
    """Compare the link's two sites now (``userrelay drift``); ``repair`` queues the fixes."""
    relay, link = _relay(request), _link(request)
    document = await _body(request)
    _fields(document, {"repair"})
    repair = document.get("repair", False)
    if not isinstance(repair, bool):
        raise InvalidRequest(f"repair: got {str(repair)[:40]!r}; expected true or false")
    state = (await _read(request, links.read_states, relay[CONFIG]))[link]
    if state.missing:
        raise LinkNotReady(link, list(state.missing))
    db = relay[DATABASE]
    report = await reconcile.reconcile(relay[CONFIG], link, relay[KEYS], db.call,
                                       db.transaction, repair=repair)
    if report.enqueued:
        for courier in relay[COURIERS].values():
            courier.wake()
    log.info("drift_compared", link=link, repair=repair, by="admin API", **report.summary())
    return web.Response(text=status.masked(json.dumps(report.as_dict())) or "",
                        content_type="application/json")


async def get_history(request: web.Request) -> web.Response:
    relay = _relay(request)
    return web.json_response(history.of(relay).series())


async def reload_config(request: web.Request) -> web.Response:
    _fields(await _body(request), set())
    return web.json_response({"reload": _reload(_relay(request))})
