"""Adding a site, adding a link and editing a link, for the admin API (and so the console).

The same steps as ``userrelay sites add`` and ``userrelay links edit``, with the same checks
(``relay.cli.wizard``'s questions' checks, ``relay.config.edit``'s validation as the relay
reads a file), taking their answers from a JSON document instead of a terminal. A refusal is a
``FieldRefused`` naming the field it concerns, so a form can show it next to that field.
Nothing is written unless every answer is valid; the file keeps its comments; a new site's key
is made in the key store and returned once, never written to the file or a log.

This module asks no questions, prints nothing and knows nothing of HTTP or of the daemon: the
caller reloads the relay after a change.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from relay.config import Config, Link, checks, is_loopback
from relay.config.edit import ConfigFile
from relay.constants import ACTIONS, DIRECTIONS, MATCH_BY, RECOMMENDED_ACTIONS
from relay.constants import LINK_FIELDS as FIELD_NAMES
from relay.errors import ConfigError, InvalidRequest, SetupRefused
from relay.keys.keystore import KeyStore

SITE_FIELDS = frozenset({"id", "label", "url", "public_url"})
#: Who and what a link syncs (relay/config/link_rules.py): checked when the file is validated.
RULE_FIELDS = frozenset({"roles", "fields", "initial_sync"})
LINK_FIELDS = frozenset({"id", "site", "remote", "sync", "direction", "outgoing", "incoming",
                         "match_by", "start", *RULE_FIELDS})
EDIT_FIELDS = frozenset({"sync", "direction", "outgoing", "incoming", "match_by", *RULE_FIELDS})
#: The user's words for each direction, and what it is best for (shown on its card).
DIRECTION_TEXT = {
    "push": ("Push to Remote", "Your site is the source: its changes go to the remote site.",
             "Best for production → staging, or a main store → branch stores."),
    "pull": ("Pull from Remote", "The remote site is the source: your site takes its changes.",
             "Best for migrations and one-way imports."),
    "bidirectional": ("Bidirectional", "Both sites are sources: changes go each way.",
                      "Warning: a change on either site can overwrite the other's."),
}


class FieldRefused(InvalidRequest):
    """A value refused, with the field it concerns (``None``: the request as a whole)."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.reason = message


@dataclass(frozen=True)
class NewSite:
    site: dict[str, Any]
    key: str
    relay_url: str
    master_key_created: str | None

    def as_dict(self) -> dict[str, Any]:
        site_id = self.site["id"]
        return {
            "site": site_id, "label": self.site["label"], "url": self.site["url"],
            "key": self.key, "relay_url": self.relay_url,
            "wp_config": [f"define( 'USERRELAY_URL', '{self.relay_url}' );",
                          f"define( 'USERRELAY_SITE', '{site_id}' );",
                          f"define( 'USERRELAY_KEY', '{self.key}' );"],
            "settings_fields": {"Relay URL": self.relay_url, "Site id at the relay": site_id,
                                "Key": self.key},
            "master_key_created": self.master_key_created,
        }


def _text(document: dict[str, Any], name: str, required: bool = True) -> str | None:
    value = document.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise FieldRefused(name, "an answer is needed")
        return None
    if not isinstance(value, str):
        raise FieldRefused(name, f"got {type(value).__name__}; expected a text")
    return value.strip()


def _unknown(document: dict[str, Any], allowed: Iterable[str]) -> None:
    for key in document:
        if key not in allowed:
            raise FieldRefused(None, f"{key}: unknown; expected {', '.join(sorted(allowed))}")


def add_site(config: Config, document: dict[str, Any]) -> NewSite:
    """Add the site ``document`` describes (id, url, label, public_url) to the configuration
    file ``config.source`` and make its key. ``public_url`` is written the first time only."""
    _unknown(document, SITE_FIELDS)
    file = ConfigFile(Path(config.source))
    current = file.config
    site_id = _text(document, "id")
    assert site_id is not None
    if site_id in current.sites:
        known = current.sites[site_id]
        raise FieldRefused("id", f"a site {site_id!r} already exists ({known.label}, "
                                 f"{known.url}); choose another id")
    if problem := checks.site_problem("id", {"id": site_id}):
        raise FieldRefused("id", problem)
    label = _text(document, "label", required=False) or site_id
    if problem := checks.site_problem("label", {"label": label}):
        raise FieldRefused("label", problem)
    url = _text(document, "url")
    assert url is not None
    url = url.rstrip("/")
    # Plain http only for a site on this machine, as `sites add` allows it with --allow-http.
    if problem := checks.url_problem(url, True):
        raise FieldRefused("url", problem)
    site: dict[str, Any] = {"id": site_id, "label": label, "url": url}
    if urlsplit(url).scheme == "http":
        site["allow_http"] = True
    settings: dict[str, Any] = {}
    relay_url = current.relay_url
    public_url = _text(document, "public_url", required=False)
    if public_url and not current.public_url:
        public_url = public_url.rstrip("/")
        if problem := checks.relay_url_problem(public_url):
            raise FieldRefused("public_url", problem)
        settings["public_url"] = relay_url = public_url
    try:
        file.add(site, None, settings)
    except ConfigError as exc:
        raise FieldRefused(None, "; ".join(exc.problems)) from None
    except SetupRefused as exc:
        raise FieldRefused(None, str(exc)) from None
    try:
        store = KeyStore(current.database_path, current.master_key_path, current.flag)
    except (OSError, sqlite3.Error) as exc:
        raise SetupRefused(f"cannot open the keys in {current.database_path}: "
                           f"{getattr(exc, 'strerror', None) or exc}; nothing was written"
                           ) from None
    try:
        key = store.generate(site_id)
        try:
            file.write()
        except BaseException:
            store.revoke(site_id)
            raise
        created = store.created_master
    finally:
        store.close()
    return NewSite(site, key.secret, relay_url, str(created) if created else None)


def _actions(document: dict[str, Any], side: str) -> list[str] | None:
    value = document.get(side)
    if value is None:
        return None
    if isinstance(value, str):
        value = checks.split_words(value)
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise FieldRefused(side, f"expected a list of actions from {', '.join(ACTIONS)}")
    unknown = [a for a in value if a not in ACTIONS]
    if unknown:
        raise FieldRefused(side, f"{', '.join(unknown)}: not an action; expected some of "
                                 f"{', '.join(ACTIONS)}")
    return list(dict.fromkeys(value))


def link_document(config: Config, document: dict[str, Any], site: str, remote: str
                  ) -> dict[str, Any]:
    """The link's settings from ``document``, each checked as ``sites add`` checks it."""
    link: dict[str, Any] = {}
    sync = document.get("sync", ["users"])
    sync = [sync] if isinstance(sync, str) else sync
    if problem := checks.link_problem("sync", {"sync": sync}, site, remote):
        raise FieldRefused("sync", problem)
    link["sync"] = sync
    direction = document.get("direction")
    if direction is None:
        raise FieldRefused("direction", f"choose one of {', '.join(DIRECTIONS)}")
    if problem := checks.link_problem("direction", {"direction": direction}, site, remote):
        raise FieldRefused("direction", problem)
    link["direction"] = direction
    for side, needed in (("outgoing", direction != "pull"), ("incoming", direction != "push")):
        actions = _actions(document, side)
        if actions is None and needed:
            actions = list(RECOMMENDED_ACTIONS)
        if actions is not None and needed:
            link[side] = actions
    match_by = document.get("match_by", MATCH_BY[0])
    if problem := checks.link_problem("match_by", {"match_by": match_by}, site, remote):
        raise FieldRefused("match_by", problem)
    link["match_by"] = match_by
    for name in sorted(RULE_FIELDS):  # None: the default (every role, every field, a sync)
        if document.get(name) is not None:
            link[name] = document[name]
    return link


def rule_document(link: Link) -> dict[str, Any]:
    """A link's role rules, fields and initial sync as the file says them (None: default)."""
    roles = {way: sorted(names) for way, names in (("outgoing", link.roles_outgoing),
                                                   ("incoming", link.roles_incoming)) if names}
    return {"roles": roles or None,
            "fields": None if link.fields == frozenset(FIELD_NAMES) else sorted(link.fields),
            "initial_sync": None if link.initial_sync else False}


def add_link(config: Config, document: dict[str, Any]) -> tuple[ConfigFile, Config, str]:
    """The configuration file with the link ``document`` describes added (not yet written),
    the configuration it makes, and the link's id."""
    _unknown(document, LINK_FIELDS)
    file = ConfigFile(Path(config.source))
    current = file.config
    site = _text(document, "site")
    remote = _text(document, "remote")
    for name, value in (("site", site), ("remote", remote)):
        if value not in current.sites:
            raise FieldRefused(name, f"no site {value!r}; configured sites: "
                                     f"{', '.join(current.sites) or '(none)'}")
    assert site is not None and remote is not None
    if site == remote:
        raise FieldRefused("remote", "a site cannot be linked to itself; choose another site")
    for known in current.links.values():
        if {known.site, known.remote} == {site, remote}:
            raise FieldRefused("remote", f"{site} and {remote} are linked already (link "
                                         f"{known.id!r}); edit that link instead")
    link_id = _text(document, "id", required=False) or f"{site}-{remote}"
    if link_id in current.links:
        raise FieldRefused("id", f"a link {link_id!r} already exists; choose another id")
    if problem := checks.link_problem("id", {"id": link_id}, site, remote):
        raise FieldRefused("id", problem)
    link = {"id": link_id, "site": site, "remote": remote,
            **link_document(current, document, site, remote)}
    try:
        file.add(None, link)
    except ConfigError as exc:
        raise FieldRefused(None, "; ".join(exc.problems)) from None
    except SetupRefused as exc:
        raise FieldRefused(None, str(exc)) from None
    return file, file.validate(file.text), link_id


def edit_link(config: Config, link_id: str, document: dict[str, Any]) -> ConfigFile:
    """The configuration file with link ``link_id`` changed as ``document`` says (not yet
    written); the fields given replace the link's (actions a direction does not use are
    removed)."""
    _unknown(document, EDIT_FIELDS)
    file = ConfigFile(Path(config.source))
    current = file.config.links.get(link_id)
    if current is None:
        raise FieldRefused(None, f"no link {link_id!r} in {config.source}")
    merged: dict[str, Any] = {"sync": list(current.sync), "direction": current.direction,
                              "outgoing": sorted(current.outgoing),
                              "incoming": sorted(current.incoming),
                              "match_by": current.match_by, **rule_document(current),
                              **document}
    link = link_document(file.config, merged, current.site, current.remote)
    changes: dict[str, Any] = {name: link.get(name) for name in EDIT_FIELDS}
    try:
        file.edit("links", link_id, changes)
    except ConfigError as exc:
        raise FieldRefused(None, "; ".join(exc.problems)) from None
    except SetupRefused as exc:
        raise FieldRefused(None, str(exc)) from None
    return file


def loopback_note(relay_url: str, site_url: str) -> str | None:
    """A warning when the sites are told a relay address only this machine reaches."""
    relay_host, site_host = urlsplit(relay_url).hostname, urlsplit(site_url).hostname
    if relay_host and site_host and is_loopback(relay_host) and not is_loopback(site_host):
        return (f"{relay_url} is an address of this machine only; {site_url} reaches it only "
                "if that WordPress runs here too. Set public_url to the relay's address as the "
                "site reaches it.")
    return None
