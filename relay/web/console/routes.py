"""The console's pages: sign-in, the dashboard and its live parts, and the actions on it
(dead letters, key rotation, links). The set-up wizard's steps are in ``wizard``.

Every page is server-rendered (Jinja2, autoescaped); the live parts are fragments that htmx
fetches again every few seconds, so a page keeps working across a restart of the relay (a
fetch that fails is tried again; the session survives, see ``session``). Every change is a
POST carrying the session's CSRF token, and is made through the admin API.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import jinja2
import structlog
from aiohttp import web

from relay.web.console import session as sessions
from relay.web.console import wizard
from relay.web.console.api import AdminClient, Answer
from relay.web.console.pages import (
    CLIENT,
    CONSOLE,
    PREFIX,
    SESSIONS,
    TEMPLATES,
    api,
    form,
    one,
    render,
)

log = structlog.get_logger("relay.web.console")
HERE = Path(__file__).parent
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Paths (below the prefix) that need no session.
OPEN = ("sign-in", "static/")
#: Only the relay's own scripts, styles and connections; no inline script, no frames.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
       "base-uri 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
           "Cross-Origin-Opener-Policy": "same-origin"}


def is_console(request: web.Request) -> bool:
    """Whether the request was routed to the console (which signs in on its own)."""
    return any(CONSOLE in app for app in request.match_info.apps)


def create_console_app(relay: web.Application, token: str) -> web.Application:

    app = web.Application(middlewares=[_security])
    app[CONSOLE] = True
    app[SESSIONS] = sessions.Sessions(token)
    app[CLIENT] = AdminClient(token)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["when"] = _when
    env.filters["ago"] = _ago
    env.filters["duration"] = _duration
    app[TEMPLATES] = env
    app.cleanup_ctx.append(_client_ctx)
    app.router.add_get("", dashboard)
    app.router.add_get("/", dashboard)
    app.router.add_get("/sign-in", sign_in_page)
    app.router.add_post("/sign-in", sign_in)
    app.router.add_post("/sign-out", sign_out)
    app.router.add_get("/live", live)
    app.router.add_get("/history.json", history_json)
    app.router.add_post("/dead/{verb:replay|purge}", dead_action)
    app.router.add_post("/sites/{site}/key", wizard.regenerate_key)
    app.router.add_post("/links/{link}/{verb:start|pause}", link_action)
    app.router.add_post("/links/{link}/drift", drift)
    app.router.add_static("/static/", HERE / "static", append_version=False)
    wizard.add_routes(app)
    return app


async def _client_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[CLIENT].close()


@web.middleware
async def _security(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Security headers on every answer; a session for every page but sign-in; a CSRF token
    and a same-origin Origin on every POST."""
    rest = request.path[len(PREFIX):] if request.path.startswith(PREFIX) else ""
    try:
        if not rest.startswith(OPEN):
            nonce = request.app[SESSIONS].nonce(request.cookies.get(sessions.COOKIE))
            if nonce is None:
                response = _refuse_unsigned(request)
            elif request.method == "POST" and not await _post_allowed(request, nonce):
                log.warning("console_csrf_refused", path=request.path, remote=request.remote)
                response = web.Response(status=403, text="Refused: this form is out of date or "
                                        "was not sent by the console (CSRF). Reload the page.")
            else:
                request["nonce"] = nonce
                response = await handler(request)
        elif request.method == "POST" and not _same_origin(request):
            response = web.Response(status=403, text="Refused: not sent by the console.")
        else:
            response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    except Exception:
        log.exception("console_request_crashed", method=request.method, path=request.path)
        response = web.Response(status=500, text="The console failed to answer this request; "
                                "the relay's log says why.")
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if not rest.startswith("static/"):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def _refuse_unsigned(request: web.Request) -> web.StreamResponse:
    if request.method == "GET" and "HX-Request" not in request.headers:
        raise web.HTTPSeeOther(PREFIX + "sign-in")
    return web.Response(status=401, text="Sign in first: " + PREFIX + "sign-in")


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    return origin is None or origin == f"{request.scheme}://{request.host}"


async def _post_allowed(request: web.Request, nonce: str) -> bool:
    if not _same_origin(request):
        return False
    presented = request.headers.get(sessions.CSRF_HEADER)
    if presented is None:
        presented = str((await request.post()).get(sessions.CSRF_FIELD, ""))
    return request.app[SESSIONS].csrf_matches(nonce, presented)


# --- sign-in ---------------------------------------------------------------------------------

async def sign_in_page(request: web.Request) -> web.Response:
    return render(request, "sign_in.html", error=None)


async def sign_in(request: web.Request) -> web.StreamResponse:
    data = await request.post()
    if not request.app[SESSIONS].token_matches(str(data.get("token", ""))):
        log.warning("console_sign_in_refused", remote=request.remote)
        return render(request, "sign_in.html", http_status=401,
                      error="That is not the admin token (admin.token_file or "
                            "USERRELAY_ADMIN_TOKEN).")
    log.info("console_signed_in", remote=request.remote)
    response = web.HTTPSeeOther(PREFIX)
    response.set_cookie(sessions.COOKIE, request.app[SESSIONS].new(), path=PREFIX,
                        max_age=sessions.LIFETIME, httponly=True, samesite="Strict",
                        secure=request.secure)
    raise response


async def sign_out(request: web.Request) -> web.StreamResponse:
    response = web.HTTPSeeOther(PREFIX + "sign-in")
    response.del_cookie(sessions.COOKIE, path=PREFIX)
    raise response


# --- the dashboard ---------------------------------------------------------------------------

async def overview(request: web.Request) -> dict[str, Any]:
    """What the dashboard shows: the status, the configuration and the latest dead letters."""
    status = await api(request).get(request, "/admin/status")
    config = await api(request).get(request, "/admin/config")
    dead = await api(request).get(request, "/admin/dead", limit="50")
    problem = next((a.error for a in (status, config, dead) if not a.ok), None)
    return {"status": status.body if status.ok else None,
            "config": config.body if config.ok else None,
            "dead": dead.body if dead.ok else None, "problem": problem, "now": time.time()}


async def dashboard(request: web.Request) -> web.Response:
    return render(request, "dashboard.html", notice=request.query.get("notice"),
                  **await overview(request))


async def live(request: web.Request) -> web.Response:
    return render(request, "live.html", **await overview(request))


async def history_json(request: web.Request) -> web.Response:
    answer = await api(request).get(request, "/admin/history")
    return web.json_response(answer.body, status=answer.status)


async def _back(request: web.Request, answer: Answer, done: str) -> web.Response:
    """The dashboard again, with what came of an action."""
    notice = done if answer.ok else f"Refused: {answer.error}"
    return render(request, "dashboard.html", notice=notice, **await overview(request))


async def dead_action(request: web.Request) -> web.Response:
    verb = request.match_info["verb"]
    values = await form(request)
    body: dict[str, Any] = {}
    if values.get("ids"):
        try:
            body["ids"] = [int(i) for i in values["ids"]]
        except ValueError:
            return await _back(request, Answer(400, {"error": "ids: expected numbers"}), "")
    for name in ("target", "source", "since", "until"):
        if one(values, name):
            body[name] = one(values, name)
    if one(values, "all"):
        body["all"] = True
    if verb == "purge" and not one(values, "confirm"):
        return await _back(request, Answer(400, {"error": "purging deletes dead letters for "
                                                          "good: tick the confirmation"}), "")
    answer = await api(request).post(request, f"/admin/dead/{verb}", body)
    done = (f"Replayed {answer.body.get('replayed')} dead letters." if verb == "replay"
            else f"Purged {answer.body.get('purged')} dead letters.") if answer.ok else ""
    return await _back(request, answer, done)


async def link_action(request: web.Request) -> web.Response:
    link, verb = request.match_info["link"], request.match_info["verb"]
    body = {}
    if verb == "pause":
        reason = one(await form(request), "reason")
        body = {"reason": reason} if reason else {}
    answer = await api(request).post(request, f"/admin/links/{link}/{verb}", body)
    return await _back(request, answer, f"Link {link}: {verb}ed." if verb == "start"
                       else f"Link {link}: paused.")


async def drift(request: web.Request) -> web.Response:
    link = request.match_info["link"]
    repair = one(await form(request), "repair") == "1"
    answer = await api(request).post(request, f"/admin/links/{link}/reconcile",
                                     {"repair": repair})
    if not answer.ok:
        return await _back(request, answer, "")
    return render(request, "drift.html", link=link, report=answer.body, repaired=repair)


# --- filters ---------------------------------------------------------------------------------

def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(timestamp)))


def _ago(timestamp: float | None) -> str:
    if not timestamp:
        return "never"
    return _duration(max(time.time() - float(timestamp), 0.0)) + " ago"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"  # noqa: RUF001 - an en dash: "none" in a table cell
    seconds = float(seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
