"""``userrelay sites list|remove`` and ``userrelay links edit|remove``: the configuration's sites
and links, changed from the command line instead of by editing YAML.

The file keeps its comments and layout (``relay.config.edit``); nothing is written unless the
result passes the relay's own validation. A removal says first what happens to what is queued
(it becomes dead letters, kept and replayable, never dropped silently) and asks to confirm;
without a terminal, ``--yes`` confirms. The database is changed before the file, so a failure
between the two leaves nothing queued for a link the file no longer has. A running relay
applies the new file on reload.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from relay import config as config_module
from relay.config import Config, Link, link_rules
from relay.config.edit import ConfigFile
from relay.db.links import LinkBook, when
from relay.errors import ConfigError, SetupRefused
from relay.keys.keystore import KeyStore


def register_sites(actions: Any, default_config: str, config_help: str) -> None:
    listing = actions.add_parser("list", help="every site: its address, key, last connection "
                                 "test and links")
    listing.add_argument("--config", default=default_config, help=config_help)
    listing.set_defaults(run=_list_sites)

    remove = actions.add_parser("remove", help="remove a site and its links from the "
                                "configuration; what is queued for it becomes dead letters")
    remove.add_argument("site")
    remove.add_argument("--yes", action="store_true", help="confirm without asking")
    remove.add_argument("--config", default=default_config, help=config_help)
    remove.set_defaults(run=_remove_site)


def register_links(actions: Any, default_config: str, config_help: str) -> None:
    edit = actions.add_parser("edit", help="change a link's direction, actions, sync type or "
                              "matching in the configuration")
    edit.add_argument("link")
    edit.add_argument("--direction", help="push, pull or bidirectional")
    edit.add_argument("--outgoing", metavar="ACTIONS",
                      help="actions sent to the remote, comma-separated, or 'none'")
    edit.add_argument("--incoming", metavar="ACTIONS",
                      help="actions taken from the remote, comma-separated, or 'none'")
    edit.add_argument("--sync", metavar="TYPE", help="what is synced: users")
    edit.add_argument("--match-by", metavar="FIELD", help="email or login")
    edit.add_argument("--roles-outgoing", metavar="ROLES",
                      help="role slugs whose users this site sends, e.g. customer,subscriber "
                      "(all: every user)")
    edit.add_argument("--roles-incoming", metavar="ROLES",
                      help="role slugs this site accepts from the remote (all: every user)")
    edit.add_argument("--fields", metavar="FIELDS",
                      help="profile fields that travel, e.g. first_name,last_name,email "
                      "(all: every one)")
    edit.add_argument("--initial-sync", choices=["true", "false"],
                      help="whether its first start copies the users the sites already have")
    edit.add_argument("--config", default=default_config, help=config_help)
    edit.set_defaults(run=_edit_link)

    remove = actions.add_parser("remove", help="remove a link from the configuration; what is "
                                "queued on it becomes dead letters")
    remove.add_argument("link")
    remove.add_argument("--yes", action="store_true", help="confirm without asking")
    remove.add_argument("--config", default=default_config, help=config_help)
    remove.set_defaults(run=_remove_link)


def _list_sites(args: argparse.Namespace) -> int:
    config = config_module.load(args.config)
    if not config.sites:
        print(f"No sites in {config.source}; add one with {config.command('sites add')}")
        return 0
    with LinkBook(config) as book:
        tests = book.site_tests()
        keyed = set(book.call(lambda conn: [r[0] for r in conn.execute(
            "SELECT site FROM site_keys")]))
    for site in config.sites.values():
        test = tests.get(site.id)
        tested = ("never tested" if test is None else
                  f"last test {'passed' if test.passed else 'FAILED'} {when(test.tested_at)}")
        links = [f"{lk.id} ({lk.site} -> {lk.remote}, {lk.direction})"
                 for lk in config.links.values() if site.id in (lk.site, lk.remote)]
        print(f"{site.id}  {site.label}  {site.url}\n"
              f"    key: {'yes' if site.id in keyed else 'NO'}; {tested}\n"
              f"    links: {', '.join(links) or 'none'}")
    return 0


def _remove_site(args: argparse.Namespace) -> int:
    config = config_module.load(args.config)
    if args.site not in config.sites:
        raise ConfigError(config.source, [f"sites: no site {args.site!r}; configured sites: "
                                          f"{', '.join(config.sites) or '(none)'}"])
    site = config.sites[args.site]
    links = [lk.id for lk in config.links.values() if site.id in (lk.site, lk.remote)]
    file = ConfigFile(Path(args.config))
    for link in links:
        file.remove("links", link)
    file.remove("sites", site.id)
    with LinkBook(config) as book:
        queued = book.pending(links, site.id)
        reason = f"site {site.id!r} was removed from the configuration"
        print(f"Removing site {site.id!r} ({site.label}, {site.url}) from {config.source}"
              + (f", with its links {', '.join(links)}" if links else "") + ".")
        print(_queued(config, queued, f"to or from {site.id}", f"--target {site.id}")
              + " Its key is deleted; the WordPress site keeps its plugin and outbox.")
        if not _confirm(args, "Remove it?"):
            print("Nothing was changed.")
            return 1
        book.retire(links, site.id, reason)
    keys = KeyStore(config.database_path, config.master_key_path, config.flag,
                    require_master=False)
    try:
        keys.revoke(site.id)
    finally:
        keys.close()
    file.write()
    print(f"Removed site {site.id!r}{' and links ' + ', '.join(links) if links else ''}. "
          + _reload_note(config))
    return 0


def _remove_link(args: argparse.Namespace) -> int:
    config = config_module.load(args.config)
    with LinkBook(config) as book:
        book.state(args.link)  # an unknown link fails here, naming the configured ones
        link = config.links[args.link]
        file = ConfigFile(Path(args.config))
        file.remove("links", link.id)
        queued = book.pending([link.id])
        print(f"Removing link {link.id} ({link.site} -> {link.remote}, {link.direction}) from "
              f"{config.source}; both sites stay.")
        print(_queued(config, queued, f"on link {link.id}", f"--target {link.remote}"))
        if not _confirm(args, "Remove it?"):
            print("Nothing was changed.")
            return 1
        book.retire([link.id], None, f"link {link.id!r} was removed from the configuration")
    file.write()
    print(f"Removed link {link.id}. " + _reload_note(config))
    return 0


def _edit_link(args: argparse.Namespace) -> int:
    config = config_module.load(args.config)
    if args.link not in config.links:
        raise ConfigError(config.source, [f"links: no link {args.link!r}; configured links: "
                                          f"{', '.join(config.links) or '(none)'}"])
    changes: dict[str, Any] = {}
    for name, value in (("direction", args.direction), ("match_by", args.match_by)):
        if value is not None:
            changes[name] = value
    if args.sync is not None:
        changes["sync"] = [args.sync]
    for side in ("outgoing", "incoming"):
        value = getattr(args, side)
        if value is not None:
            words = [w for w in value.replace(",", " ").lower().split() if w]
            changes[side] = [] if words == ["none"] else words
    changes.update(_rule_changes(args, config.links[args.link]))
    if not changes:
        raise SetupRefused("nothing to change: give --direction, --outgoing, --incoming, "
                           "--sync, --match-by, --roles-outgoing, --roles-incoming, --fields "
                           "or --initial-sync (userrelay links edit --help)")
    file = ConfigFile(Path(args.config))
    try:
        file.edit("links", args.link, changes)
    except ConfigError as exc:
        raise SetupRefused("refused, nothing was written: " + "; ".join(exc.problems)) \
            from None
    file.write()
    after = file.validate(file.text).links[args.link]
    print(f"Link {after.id} ({after.site} -> {after.remote}): {after.direction}; outgoing "
          f"{', '.join(sorted(after.outgoing)) or 'nothing'}; incoming "
          f"{', '.join(sorted(after.incoming)) or 'nothing'}; sync {', '.join(after.sync)}; "
          f"matched by {after.match_by}; {_rules_said(after)}. "
          f"Written to {config.source}. What is queued already "
          f"goes out as it was routed. " + _reload_note(config))
    return 0


def _rules_said(link: Link) -> str:
    return link_rules.describe(link.roles_outgoing, link.roles_incoming, link.fields,
                               link.initial_sync) or "every role, every profile field"


def _words(value: str) -> list[str] | None:
    """A comma- or space-separated list; None for ``all`` (the default: no limit)."""
    words = [w for w in value.replace(",", " ").split() if w]
    return None if words == ["all"] else words


def _rule_changes(args: argparse.Namespace, link: Link) -> dict[str, Any]:
    """Who and what the link syncs, as the flags change it (None removes: the default)."""
    changes: dict[str, Any] = {}
    ways = {"outgoing": args.roles_outgoing, "incoming": args.roles_incoming}
    if any(v is not None for v in ways.values()):
        roles = {way: sorted(names) for way, names in (("outgoing", link.roles_outgoing),
                                                       ("incoming", link.roles_incoming))
                 if names}
        for way, value in ways.items():
            if value is not None:
                roles[way] = _words(value)  # type: ignore[assignment]
        changes["roles"] = {k: v for k, v in roles.items() if v is not None} or None
    if args.fields is not None:
        changes["fields"] = _words(args.fields)
    if args.initial_sync is not None:
        changes["initial_sync"] = None if args.initial_sync == "true" else False
    return changes


def _queued(config: Config, queued: dict[str, int], where: str, target: str) -> str:
    total = sum(queued.values())
    if not total:
        return f"Nothing is queued {where}."
    parts = ", ".join(f"{queued[s]} {s}" for s in ("waiting", "ready", "leased") if queued.get(s))
    return (f"{total} deliveries are queued {where} ({parts}): they become dead letters, kept "
            f"until purged and replayable ({config.command(f'dead list {target}')}).")


def _confirm(args: argparse.Namespace, question: str) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise SetupRefused("not on a terminal, so nothing was changed: add --yes to confirm")
    return input(f"{question} [y/N]: ").strip().lower() in ("y", "yes")


def _reload_note(config: Config) -> str:
    return ("A running relay applies it on reload: systemctl reload userrelay (or stop and "
            f"start {config.command('serve')}).")
