"""Which user meta may travel: the one rule the relay shares with the plugin
(plugin-stub/userrelay/includes/class-userrelay-protected-meta.php), and a link's allow-list.

A key is syncable only if every character is printable ASCII (0x21..0x7E: no spaces, no
control characters, nothing non-ASCII) and it is not protected. MariaDB's utf8mb4 collations
compare ``meta_key`` ignoring case, trailing spaces, accents and ignorable characters, so
``WP_CAPABILITIES``, ``wp_capabilities `` and ``wp_capabilitiés`` all reach the real
``wp_capabilities`` row; within printable ASCII those collations differ from byte equality only
by case, so once a key is printable ASCII, comparing it in lowercase is how the table compares.

Protected, on the lowercased key: ending with ``capabilities``, ``user_level``,
``user-settings``, ``user-settings-time`` or ``dashboard_quick_press_last_post_id`` (every blog
prefix of a network); equal to ``session_tokens`` or ``community-events-location``; starting
with ``_application_passwords`` or ``userrelay`` (the plugin's own bookkeeping).

The relay never forwards a key that is not syncable, whatever a site sends; a link's
``meta_keys`` (exact keys, or prefixes ending in ``*``) narrows further what it carries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

SUFFIXES = ("capabilities", "user_level", "user-settings", "user-settings-time",
            "dashboard_quick_press_last_post_id")
EXACT = frozenset({"session_tokens", "community-events-location"})
PREFIXES = ("_application_passwords", "userrelay")


def problem(key: str) -> str | None:
    """Why ``key`` may never be synced, or None when it may."""
    if not key:
        return "meta key '' is empty"
    if not _printable(key):
        return (f"meta key {key!r} is not printable ASCII without spaces (the database would "
                "compare it with another key)")
    lower = key.lower()
    for suffix in SUFFIXES:
        if lower.endswith(suffix):
            return f"meta key {key!r} is protected (it ends with {suffix!r})"
    if lower in EXACT:
        return f"meta key {key!r} is protected"
    for prefix in PREFIXES:
        if lower.startswith(prefix):
            return f"meta key {key!r} is protected (it starts with {prefix!r})"
    return None


def syncable(key: str) -> bool:
    """``problem(key) is None``, without building the message (ingest checks every key)."""
    if not key or not _printable(key):
        return False
    lower = key.lower()
    return not (lower.endswith(SUFFIXES) or lower in EXACT or lower.startswith(PREFIXES))


def _printable(key: str) -> bool:
    """Every character in 0x21..0x7E (ASCII, printable, not a space)."""
    return key.isascii() and key.isprintable() and " " not in key


def allowed(key: str, allow_lists: Iterable[tuple[str, ...]]) -> bool:
    """Whether ``key`` is syncable and allowed by every allow-list (none: every key)."""
    if not syncable(key):
        return False
    return all(any(key.startswith(p[:-1]) if p.endswith("*") else key == p for p in patterns)
               for patterns in allow_lists)


def carried(meta: Mapping[str, Any], deleted: Iterable[str],
            allow_lists: tuple[tuple[str, ...], ...] = ()) -> tuple[dict[str, Any], list[str]]:
    """The ``meta`` and ``meta_deleted`` a target may receive."""
    return ({k: v for k, v in meta.items() if allowed(k, allow_lists)},
            [k for k in deleted if allowed(k, allow_lists)])


def refused_keys(meta: Mapping[str, Any], deleted: Iterable[str]) -> list[str]:
    """The keys of an event that are never forwarded (for the log)."""
    return [k for k in (*meta, *deleted) if not syncable(k)]
