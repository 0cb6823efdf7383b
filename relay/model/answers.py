"""What a site's answer to a delivery means: the one place that decides it.

``judge`` turns a plugin's answer to ``POST …/events`` (its status, headers and body) into a
``Verdict`` for the batch that was sent, and never raises, whatever the site sent. Only a
well-formed answer counts as the site's word on each event: a 2xx whose body is a JSON object
with a ``results`` list, each result naming an event it was sent (``id``) and a whole-number
``status``. Anything else (a 2xx with HTML or an empty body, a malformed result, a status such as
``"200 OK"``) means nothing was applied: a failed attempt for every event of the batch, like a
timeout or a reset, counted towards ``delivery.max_attempts``. An event the results leave out
was not applied (docs/protocol.md): it alone is tried again.

It knows statuses and bodies, not the queue: the courier (relay/work/courier.py) acts on a verdict.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from relay.constants import PAUSE_STATUSES, RETRY_STATUSES
from relay.model.retry import parse_retry_after

#: The most of a site's error text kept with a delivery (it may quote a whole page).
MAX_ERROR_CHARS = 500
#: Largest user id a site may name (WordPress's ID column is a signed 64-bit integer).
MAX_USER_ID = 2**63 - 1


class Kind(Enum):
    RESULTS = "results"   # a result per event (some may be missing: retried on their own)
    RETRY = "retry"       # nothing applied, try the whole batch again later
    PAUSE = "pause"       # the target is misconfigured: hold its links
    REFUSED = "refused"   # the site refused the request as a whole (4xx)


@dataclass(frozen=True)
class Result:
    """A site's word on one event it was sent."""

    status: int
    error: str | None = None
    user_id: int | None = None
    retry_after: float | None = None

    @property
    def applied(self) -> bool:
        return 200 <= self.status < 300

    @property
    def retry(self) -> bool:
        return self.status in RETRY_STATUSES or self.status >= 500


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    status: int | None
    error: str = ""
    retry_after: float | None = None
    #: Kind.RESULTS: each event's result by the id it was sent with; a sent id absent here
    #: had no result (not applied).
    results: Mapping[str, Result] = field(default_factory=dict)


def judge(sent: Iterable[str], status: int, headers: Mapping[str, str], body: bytes,
          now: float) -> Verdict:
    """The meaning of a site's answer to the events sent with ids ``sent``."""
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        return Verdict(Kind.RETRY, None, f"site answered a malformed status {status!r}")
    if 200 <= status < 300:
        results, problem = _results(set(sent), body)
        if problem is not None:
            return Verdict(Kind.RETRY, status, f"site answered {status} {problem}, so nothing "
                           f"was applied{excerpt(body)}")
        return Verdict(Kind.RESULTS, status, results=results)
    if status in RETRY_STATUSES or status >= 500:
        return Verdict(Kind.RETRY, status, f"site answered {status}{excerpt(body)}",
                       retry_after_header(headers, now))
    if status in PAUSE_STATUSES or 300 <= status < 400:
        return Verdict(Kind.PAUSE, status, _header(headers, "Location"))
    return Verdict(Kind.REFUSED, status, f"site answered {status}{excerpt(body)}")


def retry_after_header(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds from a ``Retry-After`` header; None when absent or not understood."""
    try:
        seconds = parse_retry_after(_header(headers, "Retry-After"), now)
    except Exception:  # noqa: BLE001 - a site's header must never break a delivery
        return None
    return seconds if seconds is not None and math.isfinite(seconds) else None


def _header(headers: Mapping[str, str], name: str) -> str:
    try:
        value = headers.get(name)
    except Exception:  # noqa: BLE001 - an undecodable header reads as absent
        return ""
    return value if isinstance(value, str) else ""


def _results(sent: set[str], body: bytes) -> tuple[dict[str, Result], str | None]:
    """Each sent event's result, or why the body is not a well-formed answer."""
    try:
        document = json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return {}, "without a JSON body of results"
    if not isinstance(document, dict) or not isinstance(document.get("results"), list):
        return {}, "without a result per event (no \"results\" list)"
    results: dict[str, Result] = {}
    for i, raw in enumerate(document["results"]):
        if not isinstance(raw, dict):
            return {}, f"with results[{i}] not an object"
        event_id = raw.get("id")
        if isinstance(event_id, bool) or not isinstance(event_id, str | int):
            return {}, f"with results[{i}].id not a delivery id"
        event_id = str(event_id)
        status = raw.get("status")
        if isinstance(status, bool) or not isinstance(status, int) \
                or not 100 <= status <= 599:
            return {}, f"with results[{i}].status {_quoted(status)}, not an HTTP status"
        if event_id not in sent:
            continue  # not ours: ignore it
        if event_id in results:
            return {}, f"with two results for event {event_id}"
        error = raw.get("error")
        user_id = raw.get("user_id")
        retry_after = raw.get("retry_after")
        results[event_id] = Result(
            status,
            _shown(error, MAX_ERROR_CHARS) if error not in (None, "") else None,
            user_id if isinstance(user_id, int) and not isinstance(user_id, bool)
            and 0 < user_id <= MAX_USER_ID else None,
            float(retry_after) if isinstance(retry_after, int | float)
            and not isinstance(retry_after, bool) and math.isfinite(retry_after)
            and retry_after >= 0 else None)
    return results, None


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _quoted(value: object, size: int = 40) -> str:
    """A value as JSON (ASCII: a lone surrogate is escaped), cut to ``size`` characters."""
    text = json.dumps(value, default=repr)
    return text if len(text) <= size else text[:size] + "…"


def _shown(value: object, size: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=repr)
    text = text.encode("utf-8", "replace").decode("utf-8")  # no lone surrogate reaches SQLite
    return text if len(text) <= size else text[:size] + "…"


def excerpt(body: bytes, size: int = 200) -> str:
    text = body[:size].decode("utf-8", "replace").strip()
    return f": {text}" if text else ""
