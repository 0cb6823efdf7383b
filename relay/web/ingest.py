"""Ingest: ``POST /v1/sites/{site}/events``, from a site's plugin to the relay.

Authenticate (the site's key, Standard Webhooks), validate, then hand the events to the group
commit; answer 202 only once they and their deliveries are durably stored. Errors map to one
status each and carry a message safe to show the sender (never a key).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from relay import __version__
from relay.config import protected_meta
from relay.constants import PROTOCOL
from relay.db import queue
from relay.errors import (
    BadSignature,
    BodyTooLarge,
    BodyTooSlow,
    InvalidRequest,
    RequestRejected,
    StoreUnavailable,
    UnknownSite,
)
from relay.keys import signatures
from relay.keys.signatures import PROTOCOL_HEADER, Direction
from relay.model import events
from relay.model.events import parse_batch
from relay.web import guard, metrics
from relay.web.appkeys import CONFIG, COURIERS, GROUP_COMMIT, KEYS, METRICS, REPLAYS, ROUTER

log = structlog.get_logger("relay.web.ingest")
#: Every answer of a signed route says which protocol it speaks.
PROTOCOL_ANSWER = {PROTOCOL_HEADER: str(PROTOCOL)}


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
            response = web.json_response({"error": exc.message}, status=exc.status,
                                         headers=PROTOCOL_ANSWER)
            if not request.content.at_eof():
                # Refused before its body was read: close rather than read the rest of it to
                # keep the connection (an unsigned flood then costs no memory, ADR 8).
                response.force_close()
                guard.refused_unread()
            return response
        except StoreUnavailable as exc:
            log.error("request_not_stored", site=request.match_info.get("site"), reason=str(exc))
            return web.json_response({"error": f"not stored, send again later: {exc}"},
                                     status=503, headers={"Retry-After": "5"})
    return answer


async def authenticated_body(request: web.Request) -> tuple[str, bytes]:
    """The site a request comes from and its body, once its signature is checked.

    What can be refused before the body is read is, before it is: an unknown site, missing
    headers, a timestamp outside the window, another protocol, a ``Content-Length`` over the
    limit (a body is read up to the limit only). The signature is of the site → relay secret
    (relay/keys/signatures.py), so nothing the relay signed for a site is taken here.
    """
    config = request.app[CONFIG]
    site = request.match_info["site"]
    if site not in config.sites:
        raise UnknownSite(f"no site {site!r} is configured at this relay")
    h = request.headers
    tolerance = config.ingest.timestamp_tolerance
    signatures.check_header_shape(h.get("webhook-id"), h.get("webhook-timestamp"),
                                  h.get("webhook-signature"), tolerance)
    signatures.check_protocol(h.get(PROTOCOL_HEADER), f"site {site!r}")
    limit = config.ingest.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(f"the body is larger than {limit} bytes; send fewer events per "
                           "request")
    try:
        async with asyncio.timeout(config.ingest.body_timeout):
            body = await request.read()
    except TimeoutError:
        raise BodyTooSlow(f"the body did not arrive within {config.ingest.body_timeout:g} "
                          "s of its headers") from None
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge(f"the body is larger than {limit} bytes; send fewer events per "
                           "request") from None
    # The current key, and the previous one while a rotation's grace lasts.
    keys = request.app[KEYS].accepted(site)
    if not keys:
        raise BadSignature(f"site {site!r} has no key at the relay yet")
    signatures.verify(keys, Direction.TO_RELAY, h.get("webhook-id"), h.get("webhook-timestamp"),
                      h.get("webhook-signature"), body, tolerance)
    return site, body


@metrics.counted
@answers_errors
async def receive_events(request: web.Request) -> web.Response:
    """A second use of a ``webhook-id`` gets the first answer and changes nothing (the
    receipts cover the whole retry horizon, far longer than the timestamp window)."""
    app = request.app
    site, body = await authenticated_body(request)
    h = request.headers
    events = parse_batch(body, ("events", site))
    for e in events:
        if "meta" in e.user or "meta_deleted" in e.user:
            refused = protected_meta.refused_keys(e.user.get("meta", {}),
                                                  e.user.get("meta_deleted", []))
            if refused:  # never forwarded (relay/model/events.py for_target); worth a look
                log.warning("meta_not_forwarded", site=site, event_id=e.id,
                            keys=[k[:80] for k in refused[:10]], count=len(refused))
    routes = app[ROUTER].routes_from(site)
    status, answer, repeat = await app[GROUP_COMMIT].submit(
        queue.accept_telling_repeat, site, h["webhook-id"], events, routes, time.time())
    app[METRICS].ingested(site, answer, len(events), repeat)
    if answer.get("deliveries"):
        for route in routes:
            app[COURIERS][route.target].wake()
    return web.json_response(answer, status=status, headers=PROTOCOL_ANSWER)


@answers_errors
async def ping(request: web.Request) -> web.Response:
    """``POST /v1/sites/{site}/ping``, signed: Test Connection from the site's side. Each
    signed ping is taken once."""
    site, body = await authenticated_body(request)
    try:
        document = json.loads(body)
    except ValueError:
        raise InvalidRequest("the body is not JSON") from None
    events.check_envelope(document, "ping", site)
    request.app[REPLAYS].first_use(request.headers["webhook-id"])
    return web.json_response({"site": site, "relay": __version__, "time": time.time()},
                             headers=PROTOCOL_ANSWER)


@answers_errors
async def ping_protocol_1(request: web.Request) -> web.Response:
    """``GET /v1/sites/{site}/ping``: how protocol 1 pinged; answered with what to do."""
    site = request.match_info["site"]
    offered = request.headers.get(PROTOCOL_HEADER)
    signatures.check_protocol(offered if offered != str(PROTOCOL) else "2 with GET",
                              f"site {site!r}")
    raise AssertionError("unreachable")  # check_protocol refused it


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})
