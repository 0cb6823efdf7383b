"""What every console page shares: the application's keys, rendering a template with the
session's CSRF token, reading a form, and the admin API client the pages act through.
"""

from __future__ import annotations

from typing import Any

import jinja2
from aiohttp import web

from relay.constants import ACTIONS, RECOMMENDED_ACTIONS
from relay.web.console import session as sessions
from relay.web.console.api import AdminClient

PREFIX = "/console/"
CONSOLE = web.AppKey("console", bool)
SESSIONS = web.AppKey("sessions", sessions.Sessions)
CLIENT = web.AppKey("client", AdminClient)
TEMPLATES = web.AppKey("templates", jinja2.Environment)


def render(request: web.Request, name: str, http_status: int = 200, **context: Any
           ) -> web.Response:
    nonce = request.get("nonce")
    context.setdefault("csrf", request.app[SESSIONS].csrf(nonce) if nonce else "")
    context.setdefault("signed_in", nonce is not None)
    context.setdefault("prefix", PREFIX)
    context.setdefault("actions", ACTIONS)
    context.setdefault("recommended", RECOMMENDED_ACTIONS)
    text = request.app[TEMPLATES].get_template(name).render(**context)
    return web.Response(text=text, status=http_status, content_type="text/html")


def api(request: web.Request) -> AdminClient:
    return request.app[CLIENT]


async def form(request: web.Request) -> dict[str, Any]:
    """The POSTed form (or the query of a GET), each name with its values."""
    data = await request.post() if request.method == "POST" else request.query
    values: dict[str, Any] = {}
    for key in data:
        values[key] = [str(v) for v in data.getall(key)]
    return values


def one(values: dict[str, Any], name: str, default: str = "") -> str:
    found = values.get(name)
    return found[0].strip() if found else default
