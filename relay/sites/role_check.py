"""Do the roles a link's rules name exist on its sites? Each site's plugin lists its roles in
its ping answer; Test Connection keeps them (the ``roles`` check's data), so that
``userrelay sites test`` and ``userrelay check-config`` can name a role that looks mistyped:
``links a-b roles.outgoing: customr: site 'b' has no such role; it has customer, subscriber``.

A role named by a rule is judged on the site changes come from and applied on the other, so it
should exist on both sites of the link. No I/O.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from relay.config import Config
from relay.db.links import SiteTest
from relay.sites.connection_report import OK, SKIP, WARN

#: The name of the connection test's check that keeps a site's roles.
CHECK = "roles"


def roles_of(answer: Mapping[str, Any]) -> list[dict[str, str]] | None:
    """The roles a ping answer lists (slug and name), None from a plugin that lists none."""
    raw = answer.get("roles")
    if not isinstance(raw, list):
        return None
    return [{"slug": str(r["slug"]), "name": str(r.get("name", r["slug"]))} for r in raw
            if isinstance(r, dict) and isinstance(r.get("slug"), str)]


def missing(config: Config, site: str, known: set[str]) -> list[str]:
    """What each link of ``site`` names that ``site`` lacks, with the roles it has."""
    found = []
    has = ", ".join(sorted(known)) or "no roles"
    for link in config.links.values():
        if site not in (link.site, link.remote):
            continue
        for way, names in (("outgoing", link.roles_outgoing), ("incoming", link.roles_incoming)):
            for role in sorted((names or frozenset()) - known):
                close = difflib.get_close_matches(role, sorted(known), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                found.append(f"link {link.id} roles.{way}: {role}: site {site!r} has no such "
                             f"role{hint}; it has {has}")
    return found


def known_roles(tests: Mapping[str, SiteTest]) -> dict[str, set[str]]:
    """Each tested site's roles, as its last connection test recorded them."""
    known = {}
    for site, test in tests.items():
        for check in test.checks:
            data = check.get("data") or {}
            if check.get("name") == CHECK and isinstance(data.get("roles"), list):
                known[site] = {str(r["slug"]) for r in data["roles"]}
    return known


def warnings(config: Config, tests: Mapping[str, SiteTest]) -> list[str]:
    """Every role a link names that a tested site lacks (untested sites cannot be judged)."""
    return [line for site, known in sorted(known_roles(tests).items()) if site in config.sites
            for line in missing(config, site, known)]


def verdict(config: Config, site: str, answer: Mapping[str, Any]
            ) -> tuple[str, str, str | None, dict[str, Any] | None]:
    """Test Connection's ``roles`` check of a ping answer: status, detail, fix and data."""
    if not answer:
        return SKIP, "not run: the plugin did not answer", None, None
    listed = roles_of(answer)
    if listed is None:
        return (WARN, "the plugin does not list the site's roles: links' role rules cannot "
                "be checked against them", "update the plugin on the site", None)
    lacking = missing(config, site, {r["slug"] for r in listed})
    data: dict[str, Any] = {"roles": listed}
    if lacking:
        return (WARN, "; ".join(lacking), "correct the link's roles (role slugs, as WordPress "
                "stores them), or add the role to the site", data)
    return OK, f"{len(listed)} roles: " + ", ".join(sorted(r["slug"] for r in listed)), None, data
