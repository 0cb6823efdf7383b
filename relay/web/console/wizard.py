"""The set-up wizard, step by step, in the relay's hub model.

+ Add New Site (the remote site: its address, label and id, and which of your sites it is
linked to) → its API key, shown once, with what to paste where, and Regenerate → Test
Connection of both sites (Next stays disabled until both pass) → Synchronization Type →
Sync Rules (incoming and outgoing actions; the roles whose users the link syncs each way, the
profile fields that travel, and whether its first start copies the users the sites already
have: docs/adr/0017-who-and-what-a-link-syncs.md) → Sync Direction → Start Synchronization,
then the initial sync's progress. Editing a link goes through Sync Rules, Direction and Start.

The wizard's answers travel in the pages' query strings (``site``, ``remote``, ``sync``,
``outgoing``, ``incoming``, ``roles_outgoing``, ``roles_incoming``, ``fields``,
``initial_sync``, ``direction``, ``link``): nothing is kept between requests. Each step checks
what it needs (a later step is refused until both sites passed their test; roles and fields
are checked as the relay checks a file), and each change is a request to the admin API; its
refusals are shown next to their field. A link whose role rules, fields and initial sync the
admin API does not report is edited keeping them (``rules=keep``), never resetting them.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from relay.config.checks import link_problem
from relay.constants import ACTIONS, DIRECTIONS, LINK_FIELDS, RECOMMENDED_ACTIONS
from relay.sites.provision import DIRECTION_TEXT
from relay.web.console.pages import PREFIX, api, form, one, render

STEPS = (("site", "Remote Site"), ("key", "API Key"), ("test", "Test Connection"),
         ("type", "Synchronization Type"), ("rules", "Sync Rules"),
         ("direction", "Sync Direction"), ("start", "Start Synchronization"))
SYNC_TYPES = (("users", "Users", "Accounts, profiles, roles and passwords, as your rules say.",
               True),
              ("orders", "Orders", "Coming soon.", False),
              ("posts", "Posts", "Coming soon.", False))
STATE = ("site", "remote", "link", "sync", "outgoing", "incoming", "direction",
         "confirm_delete", "roles_outgoing", "roles_incoming", "fields", "initial_sync",
         "rules")
#: Each way's role rule: the user's words for it, and what it judges.
ROLE_WAYS = (("outgoing", "Outgoing roles", "users {site} sends to {remote}, by their roles "
              "on {site}"),
             ("incoming", "Incoming roles", "users {site} takes from {remote}, by their roles "
              "on {remote}"))
GRACES = (("0", "none: the old key stops at once"), ("30m", "30 minutes"), ("1h", "1 hour"),
          ("1d", "1 day"))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/sites/new", new_site_page)
    app.router.add_post("/sites/new", add_site)
    app.router.add_get("/setup/test", test_page)
    app.router.add_post("/setup/test", run_test)
    app.router.add_get("/setup/type", type_page)
    app.router.add_get("/setup/rules", rules_page)
    app.router.add_get("/setup/direction", direction_page)
    app.router.add_get("/setup/start", start_page)
    app.router.add_post("/setup/start", start)
    app.router.add_get("/links/{link}/edit", edit)
    app.router.add_get("/links/{link}/progress", progress_page)
    app.router.add_get("/links/{link}/progress/live", progress_live)


def _state(values: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = {name: one(values, name) for name in
                             ("site", "remote", "link", "sync", "direction", "confirm_delete",
                              "roles_outgoing", "roles_incoming")}
    for side in ("outgoing", "incoming"):
        chosen = [a for a in values.get(side, []) if a in ACTIONS]
        state[side] = chosen if side in values else list(RECOMMENDED_ACTIONS)
    chosen = [f for f in values.get("fields", []) if f in LINK_FIELDS]
    state["fields"] = chosen if "fields" in values else list(LINK_FIELDS)
    state["initial_sync"] = "off" if one(values, "initial_sync") == "off" else "on"
    state["rules"] = "keep" if one(values, "rules") == "keep" else ""
    state["sync"] = state["sync"] or "users"
    return state


def _roles(text: str) -> list[str] | None:
    """A role rule as typed: slugs, comma- or space-separated; None (every role) when empty
    or ``all``. Not lower-cased: ``Customer`` is a name shown in wp-admin, not a slug."""
    words = [word for word in re.split(r"[\s,]+", text) if word]
    return None if not words or [w.lower() for w in words] == ["all"] else words


def _rules_problem(state: dict[str, Any]) -> tuple[str, str] | None:
    """The field and the problem of the first role rule or fields the relay would refuse."""
    for way in ("outgoing", "incoming"):
        names = _roles(state[f"roles_{way}"])
        if names is not None and (problem := link_problem(
                f"roles.{way}", {"roles": {way: names}, "direction": "bidirectional"},
                "site", "remote")):
            return f"roles_{way}", problem
    if problem := link_problem("fields", {"fields": state["fields"]}, "site", "remote"):
        return "fields", problem
    return None


def _query(state: dict[str, Any]) -> str:
    pairs: list[tuple[str, str]] = []
    for name in STATE:
        value = state.get(name)
        for item in value if isinstance(value, list) else [value]:
            if item:
                pairs.append((name, str(item)))
    for side in ("outgoing", "incoming", "fields"):  # an empty choice is a choice: say so
        if not state.get(side):
            pairs.append((side, "none"))
    return urlencode(pairs)


def _page(request: web.Request, name: str, step: str, state: dict[str, Any], **context: Any
          ) -> web.Response:
    return render(request, name, steps=STEPS, step=step, state=state,
                  query=_query(state), link_fields=LINK_FIELDS, **context)


async def _config(request: web.Request) -> dict[str, Any]:
    answer = await api(request).get(request, "/admin/config")
    if not answer.ok:
        raise web.HTTPServiceUnavailable(text=f"The relay did not answer: {answer.error}")
    config: dict[str, Any] = answer.body
    return config


# --- 1. the remote site, and 2. its key ----------------------------------------------------

async def new_site_page(request: web.Request) -> web.Response:
    config = await _config(request)
    return _page(request, "wizard_site.html", "site", _state({}), config=config, values={},
                 error=None, field=None)


async def add_site(request: web.Request) -> web.Response:
    config = await _config(request)
    values = await form(request)
    document = {name: one(values, name) for name in ("id", "label", "url", "public_url")
                if one(values, name)}
    answer = await api(request).post(request, "/admin/sites", document)
    site = one(values, "site")
    state = _state({"remote": [document.get("id", "")], "site": [site] if site else []})
    if not answer.ok:
        return _page(request, "wizard_site.html", "site", state, config=config,
                     values={k: one(values, k) for k in ("id", "label", "url", "public_url",
                                                         "site")},
                     error=answer.error, field=answer.field, http_status=answer.status)
    return _page(request, "wizard_key.html", "key", state, added=answer.body, graces=GRACES,
                 rotated=False)


async def regenerate_key(request: web.Request) -> web.Response:
    """Regenerate a site's key (the old one stops at once, or after the grace chosen);
    the new key is shown on this page only."""
    site = request.match_info["site"]
    values = await form(request)
    grace = one(values, "grace", "0")
    answer = await api(request).post(request, f"/admin/sites/{site}/rotate-key",
                                     {"grace": grace} if grace != "0" else {})
    state = _state({"remote": [site], "site": values.get("site", [])})
    if not answer.ok:
        return render(request, "dashboard_notice.html", http_status=answer.status,
                      notice=f"Regenerating the key of {site} was refused: {answer.error}")
    config = await _config(request)
    relay_url = config["public_url"] or config["relay_url"]
    added = {"site": site, "key": answer.body["key"], "relay_url": relay_url,
             "wp_config": [f"define( 'USERRELAY_URL', '{relay_url}' );",
                           f"define( 'USERRELAY_SITE', '{site}' );",
                           f"define( 'USERRELAY_KEY', '{answer.body['key']}' );"],
             "previous_key_accepted_until": answer.body.get("previous_key_accepted_until"),
             "links_held_until_tested": answer.body.get("links_held_until_tested", []),
             "label": config["sites"].get(site, {}).get("label", site)}
    return _page(request, "wizard_key.html", "key", state, added=added, graces=GRACES,
                 rotated=True)


# --- 3. Test Connection ----------------------------------------------------------------------

def _tested_sites(state: dict[str, Any]) -> list[str]:
    return [s for s in (state["site"], state["remote"]) if s]


async def test_page(request: web.Request) -> web.Response:
    state = _state(await form(request))
    config = await _config(request)
    sites = _tested_sites(state)
    unknown = [s for s in sites if s not in config["sites"]]
    return _page(request, "wizard_test.html", "test", state, config=config, reports=None,
                 passed=False, unknown=unknown, note=request.query.get("note"))


async def run_test(request: web.Request) -> web.Response:
    state = _state(await form(request))
    config = await _config(request)
    sites = _tested_sites(state)
    unknown = [s for s in sites if s not in config["sites"]]
    if not sites or unknown:
        return _page(request, "wizard_test.html", "test", state, config=config, reports=None,
                     passed=False, unknown=unknown, note=None, http_status=409)
    answers = await asyncio.gather(*(api(request).post(request, f"/admin/sites/{s}/test")
                                     for s in sites))
    reports = []
    for site, answer in zip(sites, answers, strict=True):
        if answer.ok:
            reports.append({"site": site, **answer.body})
        else:
            reports.append({"site": site, "passed": False, "checks": [
                {"name": "request", "title": "Test", "status": "fail",
                 "detail": answer.error, "fix": None}]})
    passed = all(r["passed"] for r in reports)
    return _page(request, "wizard_test.html", "test", state, config=config, reports=reports,
                 passed=passed, unknown=[], note=None)


async def _require_tested(request: web.Request, state: dict[str, Any]) -> dict[str, Any]:
    """The configuration, once both sites of the wizard passed their test; else back to
    Test Connection, saying why."""
    config = await _config(request)
    if not state["site"] or not state["remote"]:
        raise web.HTTPSeeOther(f"{PREFIX}setup/test?{_query(state)}")
    for site in (state["site"], state["remote"]):
        known = config["sites"].get(site)
        if known is None or not known["tested"]:
            why = known["missing"] if known else f"no site {site!r} is configured"
            raise web.HTTPSeeOther(f"{PREFIX}setup/test?{_query(state)}&"
                                   f"{urlencode({'note': why})}")
    return config


# --- 4. type, 5. rules, 6. direction, 7. start --------------------------------------------

async def type_page(request: web.Request) -> web.Response:
    state = _state(await form(request))
    await _require_tested(request, state)
    return _page(request, "wizard_type.html", "type", state, types=SYNC_TYPES)


async def rules_page(request: web.Request) -> web.Response:
    state = _state(await form(request))
    config = await _require_tested(request, state)
    if state["sync"] != "users":
        return _page(request, "wizard_type.html", "type", state, types=SYNC_TYPES, http_status=400,
                     error=f"{state['sync']}: coming soon; choose Users")
    return _rules_page(request, state, config)


def _rules_page(request: web.Request, state: dict[str, Any], config: dict[str, Any],
                field: str | None = None, error: str | None = None) -> web.Response:
    ways = [(way, title, text.format(site=state["site"], remote=state["remote"]))
            for way, title, text in ROLE_WAYS]
    return _page(request, "wizard_rules.html", "rules", state, config=config, error=error,
                 field=field, role_ways=ways, http_status=400 if error else 200)


async def direction_page(request: web.Request) -> web.Response:
    state = _state(await form(request))
    config = await _require_tested(request, state)
    if "delete" in state["outgoing"] + state["incoming"] and not state["confirm_delete"]:
        return _rules_page(request, state, config, "confirm_delete",
                           "Delete: a user deleted on one site is then deleted on the other. "
                           "Tick “I am certain” to keep it, or untick Delete.")
    if state["rules"] != "keep" and (refused := _rules_problem(state)):
        return _rules_page(request, state, config, *refused)
    return _page(request, "wizard_direction.html", "direction", state, config=config,
                 directions=[(d, *DIRECTION_TEXT[d]) for d in DIRECTIONS], error=None)


async def start_page(request: web.Request) -> web.Response:
    state = _state(await form(request))
    config = await _require_tested(request, state)
    if state["direction"] not in DIRECTIONS:
        return _page(request, "wizard_direction.html", "direction", state, config=config,
                     directions=[(d, *DIRECTION_TEXT[d]) for d in DIRECTIONS], http_status=400,
                     error="Choose a direction.")
    return _page(request, "wizard_start.html", "start", state, config=config,
                 direction_text=DIRECTION_TEXT[state["direction"]], error=None)


def _link_body(state: dict[str, Any]) -> dict[str, Any]:
    direction = state["direction"]
    body: dict[str, Any] = {"sync": [state["sync"]], "direction": direction}
    if direction != "pull":
        body["outgoing"] = state["outgoing"]
    if direction != "push":
        body["incoming"] = state["incoming"]
    if state["rules"] == "keep":
        return body
    # None brings back the default (every role, every field, an initial sync) on an edit.
    roles = {way: names for way, idle in (("outgoing", "pull"), ("incoming", "push"))
             if direction != idle and (names := _roles(state[f"roles_{way}"]))}
    body["roles"] = roles or None
    body["fields"] = None if set(state["fields"]) == set(LINK_FIELDS) else state["fields"]
    body["initial_sync"] = False if state["initial_sync"] == "off" else None
    return body


async def start(request: web.Request) -> web.StreamResponse:
    """Start Synchronization: the link is added and started (or, when editing, changed and
    started if it was not), then its initial sync's progress."""
    state = _state(await form(request))
    config = await _require_tested(request, state)
    link = state["link"]
    if link:
        answer = await api(request).post(request, f"/admin/links/{link}/edit",
                                         _link_body(state))
    else:
        answer = await api(request).post(request, "/admin/links", {
            "site": state["site"], "remote": state["remote"], **_link_body(state),
            "start": True})
        link = answer.body.get("link", {}).get("id", "") if answer.ok else ""
    if not answer.ok:
        error = answer.error
        if isinstance(answer.body, dict) and answer.body.get("missing"):
            error += ": " + "; ".join(answer.body["missing"])
        return _page(request, "wizard_start.html", "start", state, config=config,
                     direction_text=DIRECTION_TEXT.get(state["direction"], ("", "", "")),
                     error=error, http_status=answer.status)
    raise web.HTTPSeeOther(f"{PREFIX}links/{link}/progress")


async def edit(request: web.Request) -> web.StreamResponse:
    link = request.match_info["link"]
    config = await _config(request)
    known = config["links"].get(link)
    if known is None:
        raise web.HTTPNotFound(text=f"no link {link!r} is configured")
    state = {"link": link, "site": known["site"], "remote": known["remote"],
             "sync": known["sync"][0], "direction": known["direction"],
             "outgoing": known["outgoing"] or list(RECOMMENDED_ACTIONS),
             "incoming": known["incoming"] or list(RECOMMENDED_ACTIONS),
             "confirm_delete": "1" if "delete" in known["outgoing"] + known["incoming"] else ""}
    if "fields" in known:  # as the file says them: None is the default
        roles = known.get("roles") or {}
        state.update({f"roles_{way}": ", ".join(roles.get(way) or []) for way in
                      ("outgoing", "incoming")})
        state["fields"] = known["fields"] if known["fields"] is not None else list(LINK_FIELDS)
        state["initial_sync"] = "off" if known.get("initial_sync") is False else "on"
    else:  # not reported by the admin API: kept as they are, never reset by this form
        state["rules"] = "keep"
    raise web.HTTPSeeOther(f"{PREFIX}setup/rules?{_query(state)}")


async def _progress(request: web.Request) -> dict[str, Any]:
    link = request.match_info["link"]
    answer = await api(request).get(request, f"/admin/links/{link}/initial-sync")
    if answer.ok:
        return {"link": link, "progress": answer.body, "waiting": None}
    return {"link": link, "progress": None, "waiting": answer.error}


async def progress_page(request: web.Request) -> web.Response:
    return render(request, "progress.html", steps=STEPS, step="start",
                  **await _progress(request))


async def progress_live(request: web.Request) -> web.Response:
    return render(request, "progress_live.html", **await _progress(request))
