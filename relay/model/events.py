"""The event a site reports, validated field by field (docs/protocol.md is the contract).

``parse_batch`` turns a request body into ``Event`` objects or raises ``InvalidEvent`` naming
the first offending field, e.g. ``events[3].user.email: expected a string``. It also owns how
an event is cut down to what one target may receive (``for_target``) and how two pending
updates of one person merge (``merge_updates``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from relay.constants import ACTIONS
from relay.errors import InvalidEvent, InvalidRequest
from relay.model import versions

#: Profile fields: sent when create or edit is allowed (``renamed_from``: the login before a
#: rename reported with this event).
PROFILE_FIELDS = ("first_name", "last_name", "nickname", "display_name", "url", "registered",
                  "description", "locale", "renamed_from")
#: The profile fields WordPress keeps as user meta (they travel as profile, never as meta).
PROFILE_META_FIELDS = ("first_name", "last_name", "nickname", "description", "locale")
#: Fields that identify the person and are always sent, for matching.
IDENTITY_FIELDS = ("login", "email")
MAX_EVENTS_PER_REQUEST = 1000

# What a WordPress site can store (docs/adr/0008): an event it could not apply
# is refused here, naming the field, rather than poisoning the batch it would travel in.
#: User ids and any other integer: WordPress's columns are signed 64-bit integers.
MAX_INTEGER = 2**63 - 1
#: Characters of the wp_users columns (MySQL counts characters, as len() does).
COLUMN_CHARS = {"login": 60, "renamed_from": 60, "email": 100, "display_name": 250, "url": 100,
                "nicename": 50, "password_hash": 255}
#: Characters of a usermeta key (the meta_key column).
MAX_META_KEY_CHARS = 255
#: Bytes of one meta value, as JSON (UTF-8).
MAX_META_VALUE_BYTES = 65_536
#: Levels of arrays and objects within one meta value (PHP's json_decode stops at 512 for the
#: whole body; real meta nests a few levels).
MAX_META_DEPTH = 32
#: Levels of the whole body: the envelope, an event, its user, meta, then a meta value.
MAX_DEPTH = 5 + MAX_META_DEPTH
#: occurred_at: unix seconds up to the end of year 9999.
MAX_TIMESTAMP = 253_402_300_799
_DIGITS = re.compile(r"[0-9]{1,19}")
#: A JSON escape of a UTF-16 surrogate: only then can a decoded string hold a lone one.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


@dataclass(frozen=True)
class Event:
    id: str
    actions: frozenset[str]
    user: dict[str, Any]
    occurred_at: float
    origin: dict[str, str] | None
    #: Made by the relay's initial sync from a listing of the site's users
    #: (relay/work/initial_sync.py), not reported by the site; targets keep a copy changed
    #: after it (docs/protocol.md).
    backfill: bool = False
    #: The version of each field group the event carries (relay/model/versions.py); None from a
    #: plugin that sends none: its deliveries then apply as they say.
    versions: dict[str, str] | None = None
    #: The user is carried whole (every profile field, password hash, roles, syncable meta).
    whole: bool = False
    #: A "send now" from wp-admin: sent again on purpose, routed by the links' rules as any.
    resend: bool = False

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


def parse_batch(body: bytes, envelope: tuple[str, str] | None = None) -> list[Event]:
    """``envelope``: the operation and site a signed body must name (protocol 2), if any."""
    try:
        document = _load(body)
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"the body is not UTF-8: {exc}") from None
    except json.JSONDecodeError as exc:
        raise InvalidEvent(f"the body is not JSON: {exc}") from None
    except RecursionError:
        raise InvalidEvent(f"the body nests deeper than {MAX_DEPTH} levels") from None
    if envelope is not None:
        check_envelope(document, *envelope)
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
    check_values(raw, where)
    return _parse_event(raw, where)


class _Unstorable:
    """A JSON number no WordPress site can store, kept (not raised) while parsing so that the
    walk that follows can name its field."""

    def __init__(self, text: str, expected: str) -> None:
        self.text, self.expected = text, expected


def _number(text: str) -> float | _Unstorable:
    value = float(text)
    return value if math.isfinite(value) else _Unstorable(text, "a finite number")


def _integer(text: str) -> int | _Unstorable:
    digits = text.lstrip("-")
    if len(digits) > 19 or abs(int(text)) > MAX_INTEGER:
        return _Unstorable(text, f"an integer from -{MAX_INTEGER} to {MAX_INTEGER}")
    return int(text)


def _constant(text: str) -> _Unstorable:
    return _Unstorable(text, "a finite number (NaN and Infinity are not JSON)")


def _load(body: bytes) -> Any:
    """The body as JSON; ``InvalidEvent`` names the first value no WordPress site can store
    (a non-finite or out-of-range number, a lone surrogate) or nesting past ``MAX_DEPTH``."""
    suspect: list[bool] = []

    def flag(value: Any) -> Any:
        if isinstance(value, _Unstorable):
            suspect.append(True)
        return value
    document = json.loads(body, parse_float=lambda t: flag(_number(t)),
                          parse_int=lambda t: flag(_integer(t)),
                          parse_constant=lambda t: flag(_constant(t)))
    if suspect or _SURROGATE_ESCAPE.search(body):
        check_values(document, "")
    return document


def check_values(document: Any, where: str) -> None:
    """Every value in ``document`` is one a WordPress site can store and it nests at most
    ``MAX_DEPTH`` levels; ``InvalidEvent`` names the first that is not."""
    stack: list[tuple[Any, str, int]] = [(document, where, 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            _text(value, path)
        elif isinstance(value, _Unstorable):
            raise InvalidEvent(f"{path or 'the body'}: got {value.text[:40]}; expected "
                               f"{value.expected}")
        elif isinstance(value, float) and not math.isfinite(value):
            raise _fail(path, "a finite number", value)
        elif isinstance(value, int) and not isinstance(value, bool) \
                and abs(value) > MAX_INTEGER:
            raise _fail(path, f"an integer from -{MAX_INTEGER} to {MAX_INTEGER}", value)
        elif isinstance(value, dict | list):
            if depth >= MAX_DEPTH:
                raise InvalidEvent(f"{path or 'the body'}: nests deeper than {MAX_DEPTH} "
                                   "levels")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in reversed(list(items)):
                if isinstance(key, str):
                    _text(key, f"{path}: the key {key!r}")
                    inner = f"{path}.{key}" if path else key
                else:
                    inner = f"{path}[{key}]"
                stack.append((item, inner, depth + 1))


def _text(value: str, where: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEvent(f"{where or 'the body'}: has a lone UTF-16 surrogate; expected "
                           "text a site can store (valid UTF-8)") from None


def _fail(where: str, expected: str, got: Any = ...) -> InvalidEvent:
    return InvalidEvent(f"{where}: {'' if got is ... else f'got {_shown(got)}; '}"
                        f"expected {expected}")


def _shown(value: Any) -> str:
    """A value as JSON, cut to 80 characters; never fails (huge integers, deep nesting)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INTEGER:
        return f"an integer of {len(str(value)) if value.bit_length() < 14000 else 'many'} " \
               "digits"
    try:
        text = json.dumps(value)
    except (ValueError, RecursionError, TypeError):
        text = repr(value)
    return text[:80]


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
    for flag in ("whole", "resend"):
        if not isinstance(raw.get(flag, False), bool):
            raise _fail(f"{where}.{flag}", "true or false", raw[flag])
    if {"create", "edit"} <= action_set and raw.get("resend") is not True:
        raise _fail(f"{where}.actions", "create or edit, not both (except in a resend)",
                    actions)
    occurred_at = raw.get("occurred_at")
    if isinstance(occurred_at, bool) or not isinstance(occurred_at, int | float) \
            or not 0 <= occurred_at <= MAX_TIMESTAMP:
        raise _fail(f"{where}.occurred_at", f"unix seconds (a number from 0 to {MAX_TIMESTAMP})",
                    occurred_at)
    user = _parse_user(raw.get("user"), f"{where}.user", action_set)
    origin = raw.get("origin")
    if origin is not None:
        if (not isinstance(origin, dict) or not isinstance(origin.get("site"), str)
                or not isinstance(origin.get("event_id"), str)):
            raise _fail(f"{where}.origin", "an object with string site and event_id", origin)
        origin = {"site": origin["site"], "event_id": origin["event_id"]}
    return Event(event_id, action_set, user, float(occurred_at), origin,
                 versions=parse_versions(raw.get("versions"), f"{where}.versions"),
                 whole=raw.get("whole") is True, resend=raw.get("resend") is True)


#: Names of field groups a version may be given for (``meta:KEY`` besides).
VERSION_GROUPS = frozenset({*versions.BASE_GROUPS, "delete"})


def parse_versions(raw: Any, where: str) -> dict[str, str] | None:
    """An event's ``versions`` (group -> ``"MS.COUNTER@SITE"``), None when absent."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _fail(where, "an object of field group to version", raw)
    for group, version in raw.items():
        if group not in VERSION_GROUPS and not (
                group.startswith("meta:") and 0 < len(group) - 5 <= MAX_META_KEY_CHARS):
            raise _fail(f"{where}: the key {group[:40]!r}", "a field group (created, profile, "
                        "email, password, roles, delete, meta:* or meta:KEY)")
        if versions.parse(version) is None:
            raise _fail(f"{where}.{group}", "a version such as \"1764250000125.0@shop\"",
                        version)
    return dict(raw)


def _parse_user(raw: Any, where: str, actions: frozenset[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _fail(where, "an object", raw)
    user_id = raw.get("id")
    if isinstance(user_id, str) and _DIGITS.fullmatch(user_id):
        user_id = int(user_id)
    if isinstance(user_id, bool) or not isinstance(user_id, int) \
            or not 0 < user_id <= MAX_INTEGER:
        raise _fail(f"{where}.id", f"the site's user id (an integer from 1 to {MAX_INTEGER})",
                    raw.get("id"))
    if not isinstance(raw.get("login"), str) or not raw["login"]:
        raise _fail(f"{where}.login", "a non-empty string", raw.get("login"))
    if not isinstance(raw.get("email"), str):
        # WordPress allows a user without an email: "" then, and the user is matched by login.
        raise _fail(f"{where}.email", "a string (\"\" for a user without an email)",
                    raw.get("email"))
    for name in PROFILE_FIELDS:
        if name in raw and not isinstance(raw[name], str):
            raise _fail(f"{where}.{name}", "a string", raw[name])
    for name, limit in COLUMN_CHARS.items():
        if isinstance(raw.get(name), str) and len(raw[name]) > limit:
            raise InvalidEvent(f"{where}.{name}: {len(raw[name])} characters; WordPress "
                               f"stores at most {limit}")
    if "password" in actions and not isinstance(raw.get("password_hash"), str):
        raise _fail(f"{where}.password_hash", "the password hash (actions include password)",
                    raw.get("password_hash"))
    if "roles" in actions or "roles" in raw:
        # Present in every event of a current plugin: the links' role rules judge by it.
        roles = raw.get("roles")
        if not isinstance(roles, list) or any(not isinstance(r, str) for r in roles):
            raise _fail(f"{where}.roles", "a list of role names" + (
                " (actions include roles)" if "roles" in actions else ""), roles)
    if "meta" in raw:
        _check_meta(raw["meta"], f"{where}.meta")
    deleted = raw.get("meta_deleted", [])
    if not isinstance(deleted, list) or any(not isinstance(k, str) for k in deleted):
        raise _fail(f"{where}.meta_deleted", "a list of meta keys", deleted)
    for i, key in enumerate(deleted):
        if not 0 < len(key) <= MAX_META_KEY_CHARS:
            raise _fail(f"{where}.meta_deleted[{i}]", f"a meta key of 1 to {MAX_META_KEY_CHARS} "
                        "characters", key)
    user = dict(raw)
    user["id"] = user_id
    return user


def _check_meta(meta: Any, where: str) -> None:
    if not isinstance(meta, dict):
        raise _fail(where, "an object of meta key to value", meta)
    for key, value in meta.items():
        if not 0 < len(key) <= MAX_META_KEY_CHARS:
            raise _fail(f"{where}: the key {key[:40]!r}", f"a meta key of 1 to "
                        f"{MAX_META_KEY_CHARS} characters")
        if isinstance(value, dict | list):
            _check_depth(value, f"{where}.{key}")
            size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
        else:
            size = len(value.encode()) if isinstance(value, str) else 0
        if size > MAX_META_VALUE_BYTES:
            raise InvalidEvent(f"{where}.{key}: {size} bytes; a meta value may have at most "
                               f"{MAX_META_VALUE_BYTES}")


def _check_depth(value: Any, where: str) -> None:
    """A meta value nests at most ``MAX_META_DEPTH`` levels of arrays and objects."""
    level: list[Any] = [value]
    for _ in range(MAX_META_DEPTH):
        level = [item for v in level if isinstance(v, dict | list)
                 for item in (v.values() if isinstance(v, dict) else v)]
        if not level:
            return
    if any(isinstance(v, dict | list) for v in level):
        raise InvalidEvent(f"{where}: nests deeper than {MAX_META_DEPTH} levels of arrays and "
                           "objects")


def check_envelope(document: Any, operation: str, site: str) -> None:
    """Refuse a signed body that was made for another operation or site (400)."""
    if not isinstance(document, dict):
        raise InvalidRequest("the body must be a JSON object naming its operation and site")
    if document.get("operation") != operation:
        raise InvalidRequest(f"operation: got {document.get('operation')!r}; this route takes "
                             f"{operation!r} (a signed request is valid for one operation only)")
    if document.get("site") != site:
        raise InvalidRequest(f"site: got {document.get('site')!r}; this route is site {site!r}")
