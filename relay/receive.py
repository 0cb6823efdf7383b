"""Ingest: ``POST /v1/sites/{site}/events``, from a site's plugin to the relay.

Authenticate (the site's key, Standard Webhooks), validate, then hand the events to the group
commit; answer 202 only once they and their deliveries are durably stored. Errors map to one
status each and carry a message safe to show the sender (never a key).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from relay import __version__, metrics, signatures
from relay.appkeys import CONFIG, COURIERS, GROUP_COMMIT, KEYS, METRICS, ROUTER
from relay.errors import BadSignature, BodyTooLarge, RequestRejected, StoreUnavailable, UnknownSite
from relay.events import parse_batch

log = structlog.get_logger("relay.receive")


def answers_errors(
    handler: Callable[[web.Request], Awaitable[web.Response]]
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Turn our errors into their one status each, logged once. (A plain wrapper, not a
    middleware: aiohttp's middleware chain costs a measurable share of a request.)"""
    async def answer(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except RequestRejected as exc:
            log.warning("request_rejected", site=request.match_info.get("site"),
                        status=exc.status, reason=exc.message)
            return web.json_response({"error": exc.message}, status=exc.status)
        except StoreUnavailable as exc:
            log.error("request_not_stored", site=request.match_info.get("site"), reason=str(exc))
            return web.json_response({"error": f"not stored, send again later: {exc}"},
                                     status=503, headers={"Retry-After": "5"})
    return answer


async def authenticated_body(request: web.Request) -> tuple[str, bytes]:
    """The site a request comes from and its body, once its signature is checked."""
    config = request.app[CONFIG]
    site = request.match_info["site"]
    if site not in config.sites:
        raise UnknownSite(f"no site {site!r} is configured at this relay")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge(f"the body is larger than {config['ingest.max_body_bytes']} bytes; "
                           "send fewer events per request") from None
    # The current key, and the previous one while a rotation's grace lasts.
    keys = request.app[KEYS].accepted(site)
    if not keys:
        raise BadSignature(f"site {site!r} has no key at the relay yet")
    h = request.headers
    signatures.verify(keys, h.get("webhook-id"), h.get("webhook-timestamp"),
                      h.get("webhook-signature"), body, config["ingest.timestamp_tolerance"])
    return site, body


@metrics.counted
@answers_errors
async def receive_events(request: web.Request) -> web.Response:
    app = request.app
    site, body = await authenticated_body(request)
    h = request.headers
    events = parse_batch(body)
    routes = app[ROUTER].routes_from(site)
    status, answer, repeat = await app[GROUP_COMMIT].submit(
        metrics.accept, site, h["webhook-id"], events, routes, time.time())
    app[METRICS].ingested(site, answer, len(events), repeat)
    if answer.get("deliveries"):
        for route in routes:
            app[COURIERS][route.target].wake()
    return web.json_response(answer, status=status)


@answers_errors
async def ping(request: web.Request) -> web.Response:
    """``GET /v1/sites/{site}/ping``, signed: Test Connection from the site's side."""
    site, _ = await authenticated_body(request)
    return web.json_response({"site": site, "relay": __version__, "time": time.time()})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})
