"""Versions: which of two changes of a user's field group is the newer (the convergence rule).

A version is a hybrid logical clock reading ``"MS.COUNTER@SITE"`` stamped by the site whose
plugin made the change: milliseconds of that site's clock (or of a newer version it had seen),
a counter ordering readings within one millisecond, and the site's id, which breaks a tie.
Versions compare as ``(ms, counter, site)``. The plugin's class-userrelay-versions.php holds the
same rule (a test runs both on the same cases); docs/adr/0011-convergent-versions.md says why.

Groups: ``created`` (which incarnation of the person), ``profile``, ``email``, ``password``,
``roles``, ``meta:KEY`` per meta key (``meta:*`` stands for every key without a version of its
own), and ``delete`` on a delete. The relay never makes versions: it carries them, keeps the
newer per group when it folds two pending updates into one, and compares them to decide which
side of a link holds the newer change. Pure functions; nothing here does I/O.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from typing import NamedTuple

#: The oldest version: what a group nobody ever versioned holds.
MIN = "0.0@"
_VERSION = re.compile(r"([0-9]{1,15})\.([0-9]{1,9})@([\x21-\x7e]{0,64})")
#: Groups every user has; meta keys come on top as ``meta:KEY``.
BASE_GROUPS = ("created", "profile", "email", "password", "roles", "meta:*")
#: The groups of a reconciliation digest, as versioned groups (``meta`` stands for every
#: ``meta:`` group).
DIGEST_GROUPS = {"profile": ("profile", "email"), "roles": ("roles",),
                 "password": ("password",), "meta": ()}


class Version(NamedTuple):
    ms: int
    counter: int
    site: str

    def __str__(self) -> str:
        return f"{self.ms}.{self.counter}@{self.site}"

    @property
    def at(self) -> float:
        """Unix seconds of the clock reading."""
        return self.ms / 1000


def parse(text: object) -> Version | None:
    """A version's parts, or None when ``text`` is not a version."""
    if not isinstance(text, str):
        return None
    found = _VERSION.fullmatch(text)
    if found is None:
        return None
    return Version(int(found[1]), int(found[2]), found[3])


def key(text: str | None) -> Version:
    """A version as something to compare (a malformed or missing one is the oldest)."""
    return parse(text) or Version(0, 0, "")


def newer(a: str | None, b: str | None) -> str:
    """The newer of two versions (``a`` on a tie)."""
    return (a or MIN) if key(a) >= key(b) else (b or MIN)


def tick(after: str | None, now_ms: int, site: str) -> str:
    """The clock's next reading at ``site``: later than ``after`` and than ``now_ms``."""
    last = key(after)
    if now_ms > last.ms:
        return str(Version(now_ms, 0, site))
    return str(Version(last.ms, last.counter + 1, site))


def now_ms() -> int:
    return int(time.time() * 1000)


def held(stored: Mapping[str, str], group: str) -> str:
    """The version a user's ``group`` holds, from their versions (meta keys fall back on
    ``meta:*``; anything else absent is the oldest)."""
    if group in stored:
        return stored[group]
    if group.startswith("meta:") and "meta:*" in stored:
        return stored["meta:*"]
    return MIN


def decide(groups: Iterable[str], delivered: Mapping[str, str], stored: Mapping[str, str],
           source_wins: bool = False) -> tuple[list[str], list[str]]:
    """Which carried groups a delivery writes and which it skips. A group is written when its
    delivered version is newer than the one held; with ``source_wins`` (a push or pull link),
    unless the one held is a newer change made by the same site."""
    apply: list[str] = []
    skip: list[str] = []
    for group in groups:
        ours, theirs = key(delivered.get(group)), key(held(stored, group))
        newer_here = theirs >= ours and (not source_wins or theirs.site == ours.site)
        (skip if newer_here else apply).append(group)
    return apply, skip


def record(stored: Mapping[str, str], apply: Iterable[str], delivered: Mapping[str, str],
           source_wins: bool = False) -> dict[str, str]:
    """The versions after applying ``apply``: the delivered ones (never backwards, except
    where a source overrode the target's own change: the target then holds the source's)."""
    result = dict(stored)
    for group in apply:
        result[group] = (delivered.get(group) or MIN) if source_wins else newer(
            held(stored, group), delivered.get(group))
    return result


def newest(versions: Mapping[str, str]) -> str:
    found = MIN
    for version in versions.values():
        found = newer(found, version)
    return found


def digest_versions(versions: Mapping[str, str], group: str,
                    other: Mapping[str, str]) -> list[str]:
    """The versioned groups behind a reconciliation digest group (for ``meta``: every meta key
    either side has a version of)."""
    if group != "meta":
        return list(DIGEST_GROUPS.get(group, (group,)))
    return sorted({g for g in (*versions, *other) if g.startswith("meta:") and g != "meta:*"}
                  | {"meta:*"})


def groups_carried(actions: Iterable[str], user: Mapping[str, object]) -> list[str]:
    """The field groups a delivery with these actions carries (``created`` and ``delete``
    ride along with every event that has them)."""
    actions = set(actions)
    groups = ["created"]
    if "delete" in actions:
        return [*groups, "delete"]
    if actions & {"create", "edit"}:
        groups += ["profile", "email"]
    groups += [g for g in ("password", "roles") if g in actions]
    if "metadata" in actions:
        meta = user.get("meta")
        deleted = user.get("meta_deleted")
        keys = [*(meta if isinstance(meta, dict) else {}),
                *(deleted if isinstance(deleted, list) else [])]
        groups += [f"meta:{k}" for k in dict.fromkeys(keys)]
    return groups


def describe(version: str | None) -> str:
    """``site-b at 2026-11-27 13:00:01.200 UTC`` (who made the change, and when by its clock)."""
    v = key(version)
    if v.ms == 0 and not v.site:
        return "never versioned"
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(v.ms // 1000))
    who = v.site or "a change made before versions"
    return f"{who} at {when}.{v.ms % 1000:03d} UTC"
