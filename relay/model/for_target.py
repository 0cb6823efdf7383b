"""An event as one target receives it: only the actions and fields that target's link allows
(meta only as far as it may travel at all), the versions of what it carries, and two queued
updates of one person merged into one delivery that does what both would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from relay.config import protected_meta
from relay.constants import ACTIONS, LINK_FIELDS
from relay.model import versions
from relay.model.events import IDENTITY_FIELDS, PROFILE_FIELDS, Event


def for_target(event: Event, allowed: frozenset[str],
               meta_keys: tuple[tuple[str, ...], ...] = (),
               fields: frozenset[str] = frozenset(LINK_FIELDS),
               roles_kept: Callable[[list[str]], list[str]] | None = None,
               ) -> tuple[frozenset[str], dict[str, Any]]:
    """The actions and user fields of ``event`` that a target allowed to receive ``allowed``;
    meta only as far as it may be synced at all and ``meta_keys`` (the links' allow-lists)
    allow it (relay/config/protected_meta.py); of the profile fields only ``fields`` (the
    links' choice: the rest are left as they are on the target); of the roles those
    ``roles_kept`` keeps (the links' role rules). A create makes an edit in the same change
    redundant (a create of a user the target holds updates them): never both."""
    actions = event.actions & allowed
    if {"create", "edit"} <= actions:
        actions -= {"edit"}
    user = {name: event.user[name] for name in IDENTITY_FIELDS}
    if actions & {"create", "edit"}:
        user.update({k: event.user[k] for k in PROFILE_FIELDS
                     if k in event.user and (k in fields or k not in LINK_FIELDS)})
    if "password" in actions:
        user["password_hash"] = event.user["password_hash"]
    if "roles" in actions:
        roles = list(event.user["roles"])
        user["roles"] = roles if roles_kept is None else roles_kept(roles)
    if "metadata" in actions:
        user["meta"], user["meta_deleted"] = protected_meta.carried(
            event.user.get("meta", {}), event.user.get("meta_deleted", []), meta_keys)
    return actions, user


def versions_for(event: Event, actions: frozenset[str], user: dict[str, Any],
                 kept: frozenset[str] = frozenset()) -> dict[str, str] | None:
    """The versions of what one target receives of ``event`` (``for_target``'s answer); none
    of a group the target keeps (``kept``: a field it must not write)."""
    if event.versions is None:
        return None
    return {g: event.versions[g] for g in versions.groups_carried(actions, user)
            if g in event.versions and g not in kept}


#: The user fields of each versioned group (meta keys are handled one by one).
_GROUP_FIELDS = {"profile": PROFILE_FIELDS, "email": ("email",),
                 "password": ("password_hash",), "roles": ("roles",)}


def merge_updates(earlier: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """One delivery payload doing what ``earlier`` then ``later`` would (both are updates).

    With versions on both, each field group comes from the payload holding its newer version
    (``later`` on a tie), and the merged versions are the newer per group: folding never sets a
    group back, whichever site each payload came from. Without versions on both, ``later``'s
    fields win and the merged payload carries none (it applies as it says)."""
    merged = dict(later)
    merged["actions"] = sorted(set(earlier["actions"]) | set(later["actions"]),
                               key=ACTIONS.index)
    ours, theirs = earlier.get("versions"), later.get("versions")
    user = {**earlier["user"], **later["user"]}
    if isinstance(ours, dict) and isinstance(theirs, dict):
        merged["versions"] = {g: versions.newer(theirs.get(g), ours.get(g))
                              for g in {*ours, *theirs}}
        for group, names in _GROUP_FIELDS.items():
            if group in ours and versions.key(ours[group]) > versions.key(theirs.get(group)):
                for name in names:
                    if name in earlier["user"]:
                        user[name] = earlier["user"][name]
        if "meta" in earlier["user"] or "meta" in later["user"]:
            user["meta"], user["meta_deleted"] = _merge_meta(earlier["user"], later["user"],
                                                             ours, theirs)
    else:
        merged.pop("versions", None)
        if "meta" in earlier["user"] or "meta" in later["user"]:
            user["meta"], user["meta_deleted"] = _merge_meta(earlier["user"], later["user"],
                                                             {}, {})
    merged["user"] = user
    merged["merged"] = [*earlier.get("merged", [earlier["origin"]["event_id"]]),
                        later["origin"]["event_id"]]
    return merged


def _merge_meta(earlier: dict[str, Any], later: dict[str, Any], ours: dict[str, str],
                theirs: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Each meta key as the payload with its newer version has it (``later`` on a tie or
    without versions): written with a value, or removed."""
    meta: dict[str, Any] = {}
    deleted: list[str] = []
    sides = [(earlier, ours), (later, theirs)]
    keys = dict.fromkeys(k for side, _ in sides
                         for k in (*side.get("meta", {}), *side.get("meta_deleted", [])))
    for k in keys:
        carrying = [(side, v) for side, v in sides
                    if k in side.get("meta", {}) or k in side.get("meta_deleted", [])]
        side, _ = max(enumerate(carrying),
                      key=lambda item: (versions.key(item[1][1].get(f"meta:{k}")), item[0]))[1]
        if k in side.get("meta", {}):
            meta[k] = side["meta"][k]
        else:
            deleted.append(k)
    return meta, deleted
