"""One field at a time: the message configuration validation gives for a value an operator
typed, for the set-up wizard (relay/cli/wizard.py) and the admin API and console
(relay/sites/provision.py), so each asks again or answers 422 with the same words a whole
file's validation would use.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from relay.config import from_mapping, is_loopback
from relay.errors import ConfigError

#: Hosts an http:// site may have, as said to users.
LOOPBACK = "127.0.0.0/8, ::1, localhost"
#: A URL that passes validation, for checking one field of a site or link alone.
PLACEHOLDER_URL = "https://site.invalid"


def split_words(text: str) -> list[str]:
    words = [word for word in re.split(r"[\s,]+", text.strip().lower()) if word]
    return [] if words == ["none"] else words


def problem_at(document: dict[str, Any], field: str) -> str | None:
    """The message config validation gives for ``field`` in ``document``, without its path."""
    try:
        from_mapping(document)
    except ConfigError as exc:
        for problem in exc.problems:
            where, _, message = problem.partition(": ")
            if where.endswith(f".{field}"):
                return message
    return None


def site_problem(field: str, values: dict[str, Any]) -> str | None:
    return problem_at({"sites": [{"id": "site", "url": PLACEHOLDER_URL, **values}]}, field)


def link_problem(field: str, values: dict[str, Any], site: str, remote: str) -> str | None:
    sites = [{"id": site, "url": PLACEHOLDER_URL}, {"id": remote, "url": PLACEHOLDER_URL}]
    link = {"id": "link", "site": site, "remote": remote, "direction": "push", **values}
    return problem_at({"sites": sites, "links": [link]}, field)


def url_problem(url: str, allow_http: bool) -> str | None:
    parts = urlsplit(url)
    if parts.scheme == "http" and parts.hostname:
        if not is_loopback(parts.hostname):
            return (f"got {url!r}; expected an https:// URL (plain http is accepted only for a "
                    f"site on this machine: {LOOPBACK})")
        if not allow_http:
            return (f"got {url!r}; expected an https:// URL (plain http only with --allow-http, "
                    "for a site on this machine)")
    return site_problem("url", {"url": url, "allow_http": True})


def relay_url_problem(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.hostname:
        return None
    return f"got {url!r}; expected the relay's http(s):// address, such as http://127.0.0.1:8480"
