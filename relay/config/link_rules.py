"""Who and what a link syncs: its role rules (``roles: {outgoing: [...], incoming: [...]}``),
its profile ``fields`` and whether it begins with an ``initial_sync``, read from one link's
mapping with every problem named (docs/adr/0017-who-and-what-a-link-syncs.md). No I/O.
"""

from __future__ import annotations

import re
from typing import Any

from relay.constants import LINK_FIELDS

#: A WordPress role slug as ``add_role()`` stores it (``sanitize_key``: lower-case letters,
#: digits, '_' and '-').
ROLE_SLUG = re.compile(r"^[a-z0-9_-]{1,64}$")


def roles(raw: Any, direction: Any, where: str, problems: list[str]
          ) -> tuple[frozenset[str] | None, frozenset[str] | None]:
    """A link's ``roles``: the outgoing and incoming lists (None: that way is not filtered)."""
    if raw is None:
        return None, None
    if not isinstance(raw, dict) or not raw or set(raw) - {"outgoing", "incoming"}:
        problems.append(f"{where}: got {raw!r}; expected a mapping such as "
                        "{outgoing: [customer, subscriber], incoming: [customer]}")
        return None, None
    for way, idle in (("outgoing", "pull"), ("incoming", "push")):
        if raw.get(way) is not None and direction == idle:
            problems.append(f"{where}.{way}: a {idle} link has no {way} changes to filter; "
                            "remove it, or make the link bidirectional")
    return (_role_list(raw.get("outgoing"), f"{where}.outgoing", problems),
            _role_list(raw.get("incoming"), f"{where}.incoming", problems))


def _role_list(raw: Any, where: str, problems: list[str]) -> frozenset[str] | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        problems.append(f"{where}: got {raw!r}; expected a non-empty list of role slugs, "
                        "e.g. [customer, subscriber] (leave it out to sync every role)")
        return None
    bad = [r for r in raw if not isinstance(r, str) or not ROLE_SLUG.match(r)]
    if bad:
        problems.append(f"{where}: got {', '.join(repr(b) for b in bad)}; expected role slugs "
                        "as WordPress stores them: lower-case letters, digits, '_' or '-' "
                        "(customer, shop_manager), not the names shown in wp-admin")
        return None
    return frozenset(raw)


def fields(raw: Any, where: str, problems: list[str]) -> frozenset[str]:
    """A link's ``fields``: the profile fields (and email) it carries; absent: all of them."""
    if raw is None:
        return frozenset(LINK_FIELDS)
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or any(f not in LINK_FIELDS for f in raw):
        unknown = [f for f in raw if f not in LINK_FIELDS] if isinstance(raw, list) else [raw]
        problems.append(f"{where}: got {', '.join(repr(u) for u in unknown)}; expected a list "
                        f"drawn from {', '.join(LINK_FIELDS)}")
        return frozenset(LINK_FIELDS)
    return frozenset(raw)


def initial_sync(raw: Any, where: str, problems: list[str]) -> bool:
    if raw is None:
        return True
    if not isinstance(raw, bool):
        problems.append(f"{where}: got {raw!r}; expected true (the first start copies the "
                        "users the sites already have) or false (only changes from then on)")
        return True
    return raw


def role_rules_text(outgoing: frozenset[str] | None, incoming: frozenset[str] | None) -> str:
    """How the CLI and the console show a link's role rules."""
    parts = [f"{way}: {', '.join(sorted(names))}" for way, names
             in (("outgoing", outgoing), ("incoming", incoming)) if names]
    return "; ".join(parts) or "every role"


def describe(outgoing: frozenset[str] | None, incoming: frozenset[str] | None,
             carried: frozenset[str], initial: bool) -> str:
    """Who and what a link syncs, when it says more than the defaults ("" when it does not)."""
    said = []
    if outgoing is not None or incoming is not None:
        said.append("roles " + role_rules_text(outgoing, incoming))
    if carried != frozenset(LINK_FIELDS):
        said.append(f"fields: {', '.join(sorted(carried)) or '(none)'}")
    if not initial:
        said.append("initial sync: off")
    return "; ".join(said)
