"""What a reconciliation finds and what it sends back: pure, no I/O.

The field groups a link syncs and the action that carries each, who is the source of a group,
the report (per person: missing on one side, differing groups, conflicts and how each was
decided) and the repair events built from a source's snapshots. The run itself, which reads
both sites, is relay/work/reconcile.py; the record of runs is relay/db/reconcile_runs.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from relay.config import Link
from relay.model import versions
from relay.model.routing import allowed_by

#: Field groups, and the action that carries each to the other site.
GROUPS = ("profile", "roles", "password", "meta")
ACTION_OF = {"profile": "edit", "roles": "roles", "password": "password", "meta": "metadata"}
MISSING, DIFFERS, CONFLICT = "missing", "differs", "conflict"


@dataclass(frozen=True)
class SiteUser:
    id: int
    email: str
    login: str
    modified: float
    digests: dict[str, str]
    #: The version of each field group (relay/model/versions.py); empty from a plugin without them.
    versions: dict[str, str] = field(default_factory=dict)


@dataclass
class Entry:
    """One person on whom the sites disagree."""

    kind: str                           # missing | differs | conflict
    match: str                          # the email or login they were matched by
    users: dict[str, int | None]        # each site's user id (None: absent there)
    source: str | None                  # the site whose version should win (None: none)
    target: str | None
    groups: list[str] = field(default_factory=list)   # field groups that differ
    repair: list[str] = field(default_factory=list)   # actions a repair sends (may be none)
    modified: dict[str, float] = field(default_factory=dict)
    decided: str = ""                   # why this source
    #: The newer change's version ("MS.COUNTER@SITE": who made it, when), if versioned.
    version: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "match": self.match, "users": self.users,
                "source": self.source, "target": self.target, "groups": self.groups,
                "repair": self.repair, "modified": self.modified, "decided": self.decided,
                "version": self.version}


@dataclass
class Report:
    link: str
    run: int
    direction: str
    groups: list[str]
    started_at: float
    finished_at: float = 0.0
    users: dict[str, int] = field(default_factory=dict)
    in_step: int = 0
    entries: list[Entry] = field(default_factory=list)
    enqueued: int | None = None         # repair events accepted (None: no repair asked)

    def summary(self) -> dict[str, Any]:
        counts = {name: sum(1 for e in self.entries if e.kind == kind)
                  for name, kind in (("missing", MISSING), ("differs", DIFFERS),
                                     ("conflicts", CONFLICT))}
        return {"run": self.run, "started_at": round(self.started_at, 3),
                "finished_at": round(self.finished_at, 3), "users": self.users,
                "in_step": self.in_step, **counts,
                "repairable": sum(1 for e in self.entries if e.repair),
                "enqueued": self.enqueued}

    def as_dict(self) -> dict[str, Any]:
        return {"link": self.link, "direction": self.direction, "groups": self.groups,
                "summary": self.summary(), "entries": [e.as_dict() for e in self.entries]}


def versions_listed(raw: Any) -> dict[str, str]:
    """A user's versions as a site listed them (malformed entries left out)."""
    if not isinstance(raw, dict):
        return {}
    return {str(g): v for g, v in raw.items() if versions.parse(v) is not None}


def groups_of(link: Link) -> list[str]:
    """The field groups a link syncs, either way (those its actions carry)."""
    actions = (allowed_by(link, link.site, link.remote)
               | allowed_by(link, link.remote, link.site))
    return [g for g in GROUPS if ACTION_OF[g] in actions
            or (g == "profile" and "create" in actions)]


def sources_of(link: Link) -> tuple[str, ...]:
    """The sites whose version wins: one for push or pull, both for bidirectional."""
    return {"push": (link.site,), "pull": (link.remote,)}.get(link.direction,
                                                              (link.site, link.remote))


def repair_event(link: str, run: int, actions: list[str], user: dict[str, Any],
                 theirs: dict[str, Any] | None, versioned: bool = True) -> dict[str, Any]:
    """A protocol event (docs/protocol.md) carrying ``user``'s fields for ``actions``; with
    the source's versions when ``versioned`` (a conflict decided by them). Any other repair
    (a push or pull link's source, whose word is final; a conflict no version decides, made
    behind the plugins' backs) goes without: the target applies it as it says."""
    fields = {k: v for k, v in user.items() if k not in ("modified", "versions")}
    if "metadata" in actions:
        meta = dict(fields.get("meta") or {})
        fields["meta"] = meta
        fields["meta_deleted"] = sorted(set((theirs or {}).get("meta") or {}) - set(meta))
    else:
        fields.pop("meta", None)
    # occurred_at: when the source last changed the user, which the target then records as
    # its own modification time (so the next run sees both sides changed at the same time).
    event = {"id": f"repair-{link}-{run}-{user['id']}",
             "occurred_at": float(user.get("modified") or time.time()),
             "actions": actions, "user": fields}
    held = versions_listed(user.get("versions"))
    if held and versioned:  # the source's versions: the target keeps each group it holds newer
        event["versions"] = {g: versions.held(held, g)
                             for g in versions.groups_carried(actions, fields)}
    return event
