"""The event a site reports, validated field by field (docs/protocol.md is the contract).

``parse_batch`` turns a request body into ``Event`` objects or raises ``InvalidEvent`` naming
the first offending field, e.g. ``events[3].user.email: expected a string``. It also owns how
an event is cut down to what one target may receive (``for_target``) and how two pending
updates of one person merge (``merge_updates``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from relay.constants import ACTIONS
from relay.errors import InvalidEvent

#: Profile fields: sent when create or edit is allowed.
PROFILE_FIELDS = ("first_name", "last_name", "nickname", "display_name", "url", "registered",
                  "description", "locale")
#: Fields that identify the person and are always sent, for matching.
IDENTITY_FIELDS = ("login", "email")
MAX_EVENTS_PER_REQUEST = 1000


@dataclass(frozen=True)
class Event:
    id: str
    actions: frozenset[str]
    user: dict[str, Any]
    occurred_at: float
    origin: dict[str, str] | None
    #: Made by the relay's initial sync from a listing of the site's users (relay/backfill.py),
    #: not reported by the site; targets keep a copy changed after it (docs/protocol.md).
    backfill: bool = False

    @property
    def user_id(self) -> int:
        return int(self.user["id"])

    @property
    def kind(self) -> str:
        return kind_of(self.actions)


def kind_of(actions: frozenset[str] | set[str]) -> str:
    if "delete" in actions:
        return "delete"
    if "create" in actions:
        return "create"
    return "update"


def parse_batch(body: bytes) -> list[Event]:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEvent(f"the body is not JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("events"), list):
        raise InvalidEvent("events: expected an object {\"events\": [...]}")
    raw_events = document["events"]
    if not raw_events:
        raise InvalidEvent("events: expected at least one event")
    if len(raw_events) > MAX_EVENTS_PER_REQUEST:
        raise InvalidEvent(f"events: got {len(raw_events)}; at most "
                           f"{MAX_EVENTS_PER_REQUEST} per request")
    seen: set[str] = set()
    events = []
    for i, raw in enumerate(raw_events):
        event = _parse_event(raw, f"events[{i}]")
        if event.id in seen:
            raise InvalidEvent(f"events[{i}].id: {event.id!r} appears twice in this request")
        seen.add(event.id)
        events.append(event)
    return events


def parse_event(raw: Any, where: str) -> Event:
    """One event, checked as one of a request's would be (``InvalidEvent`` names the field)."""
    return _parse_event(raw, where)


def _fail(where: str, expected: str, got: Any = ...) -> InvalidEvent:
    shown = "" if got is ... else f"got {json.dumps(got)[:80]}; "
    return InvalidEvent(f"{where}: {shown}expected {expected}")


def _parse_event(raw: Any, where: str) -> Event:
    if not isinstance(raw, dict):
        raise _fail(where, "an object", raw)
    event_id = raw.get("id")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= 128:
        raise _fail(f"{where}.id", "a string of 1 to 128 characters", event_id)
    actions = raw.get("actions")
    if (not isinstance(actions, list) or not actions
            or any(not isinstance(a, str) or a not in ACTIONS for a in actions)):
        raise _fail(f"{where}.actions", f"a non-empty list drawn from {', '.join(ACTIONS)}",
                    actions)
    action_set = frozenset(actions)
    if "delete" in action_set and len(action_set) > 1:
        raise _fail(f"{where}.actions", "delete alone", actions)
    if {"create", "edit"} <= action_set:
        raise _fail(f"{where}.actions", "create or edit, not both", actions)
    occurred_at = raw.get("occurred_at")
    if isinstance(occurred_at, bool) or not isinstance(occurred_at, int | float):
        raise _fail(f"{where}.occurred_at", "unix seconds (a number)", occurred_at)
    user = _parse_user(raw.get("user"), f"{where}.user", action_set)
    origin = raw.get("origin")
    if origin is not None:
        if (not isinstance(origin, dict) or not isinstance(origin.get("site"), str)
                or not isinstance(origin.get("event_id"), str)):
            raise _fail(f"{where}.origin", "an object with string site and event_id", origin)
        origin = {"site": origin["site"], "event_id": origin["event_id"]}
    return Event(event_id, action_set, user, float(occurred_at), origin)


def _parse_user(raw: Any, where: str, actions: frozenset[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _fail(where, "an object", raw)
    user_id = raw.get("id")
    if isinstance(user_id, bool) or not (isinstance(user_id, int) and user_id > 0
                                         or isinstance(user_id, str) and user_id.isdigit()):
        raise _fail(f"{where}.id", "the site's user id (a positive integer)", user_id)
    for name in IDENTITY_FIELDS:
        if not isinstance(raw.get(name), str) or not raw[name]:
            raise _fail(f"{where}.{name}", "a non-empty string", raw.get(name))
    for name in PROFILE_FIELDS:
        if name in raw and not isinstance(raw[name], str):
            raise _fail(f"{where}.{name}", "a string", raw[name])
    if "password" in actions and not isinstance(raw.get("password_hash"), str):
        raise _fail(f"{where}.password_hash", "the password hash (actions include password)",
                    raw.get("password_hash"))
    if "roles" in actions:
        roles = raw.get("roles")
        if not isinstance(roles, list) or any(not isinstance(r, str) for r in roles):
            raise _fail(f"{where}.roles", "a list of role names (actions include roles)", roles)
    if "meta" in raw and not isinstance(raw["meta"], dict):
        raise _fail(f"{where}.meta", "an object of meta key to value", raw["meta"])
    deleted = raw.get("meta_deleted", [])
    if not isinstance(deleted, list) or any(not isinstance(k, str) for k in deleted):
        raise _fail(f"{where}.meta_deleted", "a list of meta keys", deleted)
    user = dict(raw)
    user["id"] = int(user_id)
    return user


def for_target(event: Event, allowed: frozenset[str]) -> tuple[frozenset[str], dict[str, Any]]:
    """The actions and user fields of ``event`` that a target allowed to receive ``allowed``."""
    actions = event.actions & allowed
    user = {name: event.user[name] for name in IDENTITY_FIELDS}
    if actions & {"create", "edit"}:
        user.update({k: event.user[k] for k in PROFILE_FIELDS if k in event.user})
    if "password" in actions:
        user["password_hash"] = event.user["password_hash"]
    if "roles" in actions:
        user["roles"] = list(event.user["roles"])
    if "metadata" in actions:
        user["meta"] = dict(event.user.get("meta", {}))
        user["meta_deleted"] = list(event.user.get("meta_deleted", []))
    return actions, user


def merge_updates(earlier: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """One delivery payload doing what ``earlier`` then ``later`` would (both are updates)."""
    merged = dict(later)
    merged["actions"] = sorted(set(earlier["actions"]) | set(later["actions"]),
                               key=ACTIONS.index)
    user = {**earlier["user"], **later["user"]}
    if "meta" in earlier["user"] or "meta" in later["user"]:
        meta = {k: v for k, v in earlier["user"].get("meta", {}).items()
                if k not in later["user"].get("meta_deleted", [])}
        meta.update(later["user"].get("meta", {}))
        deleted = [k for k in earlier["user"].get("meta_deleted", []) if k not in meta]
        deleted += [k for k in later["user"].get("meta_deleted", []) if k not in deleted]
        user["meta"], user["meta_deleted"] = meta, deleted
    merged["user"] = user
    merged["merged"] = earlier.get("merged", [earlier["origin"]["event_id"]]) + [
        later["origin"]["event_id"]]
    return merged
