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
    GET  /admin/links/{link}/initial-sync  the initial sync: done of total, rate, time left
    POST /admin/links/{link}/reconcile   {"repair": false}: compare the link's two sites
    (``…/progress`` and ``…/drift``, their former names, still answer.)
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

import hmac
import os
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from relay.config import Config, is_loopback
from relay.db import status
from relay.errors import (
    ConfigError,
    KeyStoreError,
    LinkNotReady,
    RequestRejected,
    SetupRefused,
    StoreUnavailable,
    UserRelayError,
)
from relay.sites import provision
from relay.web import admin_dead, admin_sites, history
from relay.web.admin_requests import (
    RELAY,
    TOKEN,
    body_of,
    only_fields,
    read_db,
    relay_of,
    reload_soon,
)
from relay.web.appkeys import ADMIN_URL, CONFIG
from relay.web.console import pages
from relay.web.console import routes as console

log = structlog.get_logger("relay.web.admin")

TOKEN_ENV = "USERRELAY_ADMIN_TOKEN"  # noqa: S105 - the variable's name, not a token
MIN_TOKEN_LENGTH = 32
#: How long a stopping admin listener lets a request in progress finish (seconds).
SHUTDOWN_GRACE = 5.0
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
    admin.router.add_get("/admin/dead", admin_dead.list_dead)
    admin.router.add_post("/admin/dead/replay", admin_dead.replay_dead)
    admin.router.add_post("/admin/dead/purge", admin_dead.purge_dead)
    admin.router.add_post("/admin/sites/{site}/test", admin_sites.test_site)
    admin.router.add_post("/admin/sites/{site}/rotate-key", admin_sites.rotate_key)
    admin.router.add_post("/admin/links/{link}/start", admin_sites.start_link)
    admin.router.add_post("/admin/links/{link}/pause", admin_sites.pause_link)
    admin.router.add_get("/admin/config", admin_sites.get_config)
    admin.router.add_post("/admin/sites", admin_sites.add_site)
    admin.router.add_post("/admin/links", admin_sites.add_link)
    admin.router.add_post("/admin/links/{link}/edit", admin_sites.edit_link)
    admin.router.add_get("/admin/links/{link}/initial-sync", admin_sites.link_progress)
    admin.router.add_post("/admin/links/{link}/reconcile", admin_sites.drift_link)
    admin.router.add_get("/admin/links/{link}/progress", admin_sites.link_progress)  # former
    admin.router.add_post("/admin/links/{link}/drift", admin_sites.drift_link)  # former
    admin.router.add_get("/admin/history", get_history)
    admin.router.add_post("/admin/reload", reload_config)
    admin.router.add_get("/admin/sites", admin_sites.list_sites)
    admin.router.add_post("/admin/sites/{site}/remove", admin_sites.remove_site)
    admin.router.add_post("/admin/links/{link}/remove", admin_sites.remove_link)
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


async def get_status(request: web.Request) -> web.Response:
    snapshot = await read_db(request, status.snapshot, relay_of(request)[CONFIG])
    return web.json_response(snapshot)


async def get_history(request: web.Request) -> web.Response:
    relay = relay_of(request)
    return web.json_response(history.of(relay).series())


async def reload_config(request: web.Request) -> web.Response:
    only_fields(await body_of(request), set())
    return web.json_response({"reload": reload_soon(relay_of(request))})
