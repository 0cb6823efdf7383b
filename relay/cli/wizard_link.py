"""``userrelay sites add``, the link: the questions about the link to an existing site.

Owns their order and their checks: the remote site, the link's id, the sync type, the
direction, the actions each way, the roles whose users it syncs each way it flows, the profile
fields that travel, how a person is first found, and whether its first start copies the users
the sites already have (its initial sync). Each answer is checked as the relay checks a file
(``relay.config.checks``); a role is also checked against the roles the remote site listed at
its last Test Connection, when it had one (docs/adr/0017-who-and-what-a-link-syncs.md): on a
terminal a role it lacks is kept only when confirmed, with flags it is a warning, as in
``check-config``. Asks and says through the wizard (relay/cli/wizard.py); writes nothing.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from relay.config import Config, link_rules
from relay.config.checks import link_problem, split_words
from relay.constants import ACTIONS, LINK_FIELDS, MATCH_BY, RECOMMENDED_ACTIONS, SYNC_TYPES_PLANNED
from relay.db import links as link_book
from relay.sites import role_check

Check = Callable[[str], str | None]
#: ``answer(flag, given, question, default, check)``: the wizard's way of getting one answer.
Answer = Callable[[str, str | None, str, str | None, Check], str]
#: One line on each direction, as seen from the site the link is set up on.
DIRECTION_HELP = {
    "push": "{site} is the source: its changes go to {remote}",
    "pull": "{remote} is the source: {site} takes {remote}'s changes",
    "bidirectional": "both: changes go each way, and a change on either side can overwrite "
                     "the other (the newest change of a field wins on both sites)",
}
#: What each way's role rule judges, as seen from the link's site.
ROLES_QUESTION = {"outgoing": "Roles whose users {site} sends to {remote}",
                  "incoming": "Roles whose users {site} takes from {remote}"}


class Confirm(Protocol):
    """What the link's questions need of the wizard's terminal (relay.cli.wizard.Prompt)."""

    def confirm(self, question: str, default: bool) -> bool: ...


#: The answer that means "no limit" (a role rule or fields left out: the default).
ALL = "all"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that answer the link's questions."""
    def flag(name: str, metavar: str, text: str) -> None:
        parser.add_argument(name, metavar=metavar, help=text)

    flag("--remote", "SITE", "an existing site to link the new site to")
    flag("--link-id", "LINK", "the link's id (default: SITE-REMOTE)")
    flag("--sync", "TYPE", "what is synced: users (orders, posts: coming soon)")
    flag("--direction", "DIRECTION", "push, pull or bidirectional")
    flag("--outgoing", "ACTIONS", "actions sent to the remote (default: create,edit,roles)")
    flag("--incoming", "ACTIONS", "actions taken from the remote (default: create,edit,roles)")
    flag("--roles-outgoing", "ROLES", "role slugs whose users the site sends, e.g. "
         "customer,subscriber (default: all, every user)")
    flag("--roles-incoming", "ROLES", "role slugs whose users the site takes from the remote "
         "(default: all, every user)")
    flag("--fields", "FIELDS", f"profile fields that travel, from {','.join(LINK_FIELDS)} "
         "(default: all)")
    flag("--match-by", "FIELD", "how a person is first found: email (default) or login")
    parser.add_argument("--initial-sync", choices=["true", "false"],
                        help="whether the link's first start copies the users the sites "
                        "already have (default: true)")


#: The link's flags, by their option names, for the check that they come with --remote.
FLAGS = ("link_id", "sync", "direction", "outgoing", "incoming", "roles_outgoing",
         "roles_incoming", "fields", "match_by", "initial_sync")


def role_words(text: str) -> list[str] | None:
    """Role slugs as typed (not lower-cased: ``Customer`` is a name, not a slug); None: all."""
    words = [word for word in re.split(r"[\s,]+", text.strip()) if word]
    return None if [w.lower() for w in words] == [ALL] else words


def field_words(text: str) -> list[str] | None:
    words = split_words(text)
    return None if words == [ALL] else words


def reported_roles(config: Config, site: str) -> set[str] | None:
    """The roles ``site`` listed at its last Test Connection (None: never tested, or a plugin
    that lists none). Read only: a wizard that is refused creates no database."""
    path = Path(config.database_path)
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tests = link_book.site_tests(conn)
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return role_check.known_roles(tests).get(site)


def lacking(names: list[str], site: str, known: set[str]) -> str | None:
    """What ``site`` lacks of ``names``, as ``sites test`` and ``check-config`` say it."""
    said = []
    for role in sorted(set(names) - known):
        close = difflib.get_close_matches(role, sorted(known), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        said.append(f"{role}: site {site!r} has no such role{hint}")
    if not said:
        return None
    return "; ".join(said) + f"; it has {', '.join(sorted(known)) or 'no roles'}"


class LinkStep:
    """The link's questions, answered by flags or on a terminal through the wizard's ``answer``."""

    def __init__(self, args: argparse.Namespace, prompt: Confirm | None,
                 say: Callable[[str], None], answer: Answer) -> None:
        self.args = args
        self.prompt = prompt
        self.say = say
        self.answer = answer

    def ask(self, config: Config, path: Path, site_id: str) -> dict[str, Any] | None:
        args, sites = self.args, list(config.sites)

        def check_remote(remote: str) -> str | None:
            if remote in config.sites or (self.prompt and remote == "none"):
                return None
            return f"expected one of the sites: {', '.join(sites) or '(none configured)'}"

        if args.remote is None and (not sites or self.prompt is None):
            return None
        remote = self.answer(
            "--remote", args.remote, f"Link {site_id} to which existing site ({', '.join(sites)};"
            " 'none' for no link)", sites[0] if len(sites) == 1 else None, check_remote)
        if remote == "none":
            return None

        def check_link_id(link_id: str) -> str | None:
            if link_id in config.links:
                known = config.links[link_id]
                return (f"a link {link_id!r} already exists in {path} ({known.site} to "
                        f"{known.remote}); choose another id with --link-id")
            return link_problem("id", {"id": link_id}, site_id, remote)

        link: dict[str, Any] = {"id": self.answer("--link-id", args.link_id, "Link id",
                                                  f"{site_id}-{remote}", check_link_id),
                                "site": site_id, "remote": remote}
        if self.prompt:
            self.say("What to sync: users. " + " and ".join(SYNC_TYPES_PLANNED).capitalize()
                     + " are coming soon.")
        link["sync"] = [self.answer("--sync", args.sync, "Sync type", "users",
                                    lambda kind: link_problem("sync", {"sync": [kind]},
                                                               site_id, remote))]
        if self.prompt:
            self.say("Direction:")
            for name, text in DIRECTION_HELP.items():
                self.say(f"  {name:<14} {text.format(site=site_id, remote=remote)}")
        link["direction"] = direction = self.answer(
            "--direction", args.direction, "Direction (push, pull, bidirectional)", None,
            lambda value: link_problem("direction", {"direction": value}, site_id, remote))
        if direction == "bidirectional":
            self.say(f"Note: with bidirectional sync a change on {site_id} can overwrite one "
                     f"on {remote}, and the other way round.")
        sides = {"outgoing": (direction != "pull", args.outgoing, f"{site_id} sends to {remote}"),
                 "incoming": (direction != "push", args.incoming, f"{site_id} takes from {remote}")}
        for side, (needed, given, what) in sides.items():
            if needed or given is not None:
                link[side] = self._actions(side, given, what, site_id, remote)
        roles = self._roles(config, link)
        if roles:
            link["roles"] = roles
        fields = self._fields(site_id, remote)
        if fields is not None:
            link["fields"] = fields
        link["match_by"] = self.answer(
            "--match-by", args.match_by, f"Find a person on the other site first by "
            f"{' or '.join(MATCH_BY)}", MATCH_BY[0],
            lambda value: link_problem("match_by", {"match_by": value}, site_id, remote))
        if not self._initial_sync():
            link["initial_sync"] = False
        return link

    def _actions(self, side: str, given: str | None, what: str, site_id: str,
                 remote: str) -> list[str]:
        def check(text: str) -> str | None:
            return link_problem(side, {side: split_words(text)}, site_id, remote)

        if self.prompt and given is None:
            others = [a for a in ACTIONS if a not in RECOMMENDED_ACTIONS and a != "delete"]
            self.say(f"Actions {what} ({side}):\n"
                     f"  recommended: {', '.join(RECOMMENDED_ACTIONS)}\n"
                     f"  also: {', '.join(others)}\n"
                     f"  delete: only when certain (a user deleted on one site is deleted on "
                     f"the other)")
        while True:
            actions = split_words(self.answer(f"--{side}", given, f"{side.capitalize()} actions, "
                                              "comma-separated, or 'none'",
                                              ",".join(RECOMMENDED_ACTIONS), check))
            if "delete" not in actions or given is not None or self.prompt is None:
                return actions
            source = site_id if side == "outgoing" else remote
            if self.prompt.confirm(f"Include delete: a user deleted on {source} is deleted on "
                                   "the other site too?", False):
                return actions

    def _roles(self, config: Config, link: dict[str, Any]) -> dict[str, list[str]]:
        """The role rule of each way the link flows (a way left at ``all`` is left out)."""
        site_id, remote, direction = link["site"], link["remote"], link["direction"]
        known = reported_roles(config, remote)
        ways = [way for way, idle in (("outgoing", "pull"), ("incoming", "push"))
                if direction != idle or getattr(self.args, f"roles_{way}") is not None]
        if self.prompt and any(getattr(self.args, f"roles_{w}") is None for w in ways):
            self.say("Which users the link syncs, by their roles: role slugs as WordPress "
                     "stores them (customer, shop_manager; not the names shown in wp-admin), "
                     f"or {ALL}. A user who leaves the roles is no longer sent; nothing is "
                     "deleted on the other site.")
            self.say(f"  {remote}'s roles at its last Test Connection: {', '.join(sorted(known))}"
                     if known else f"  {remote} has not listed its roles yet (a Test "
                     "Connection does), so the names are not checked against them.")
        rules: dict[str, list[str]] = {}
        for way in ways:
            names = self._role_rule(way, site_id, remote, direction, known)
            if names is not None:
                rules[way] = names
        return rules

    def _role_rule(self, way: str, site_id: str, remote: str, direction: str,
                   known: set[str] | None) -> list[str] | None:
        flag, given = f"--roles-{way}", getattr(self.args, f"roles_{way}")

        def check(text: str) -> str | None:
            names = role_words(text)
            if names is None:
                return None
            return link_problem(f"roles.{way}", {"roles": {way: names}, "direction": direction},
                                site_id, remote)

        question = ROLES_QUESTION[way].format(site=site_id, remote=remote)
        while True:
            names = role_words(self.answer(flag, given, f"{question}, comma-separated, or "
                                           f"'{ALL}'", ALL, check))
            missing = lacking(names, remote, known) if names is not None and known else None
            if missing is None:
                return names
            if self.prompt is None or given is not None:
                self.say(f"Warning: {flag}: {missing}. The link is written as asked; the role "
                         f"may be added to {remote} later.")
                return names
            self.say(f"  {missing}")
            if self.prompt.confirm(f"Keep {', '.join(names or [])} anyway (the role may be "
                                   f"added to {remote} later)?", False):
                return names

    def _fields(self, site_id: str, remote: str) -> list[str] | None:
        """The profile fields that travel (None: every one, the default)."""
        if self.prompt and self.args.fields is None:
            self.say(f"Profile fields: {', '.join(LINK_FIELDS)}. A field left out is left as "
                     "it is on the other site; email left out still travels, to find the "
                     "person, but is not written over an existing user's email.")

        def check(text: str) -> str | None:
            words = field_words(text)
            return None if words is None else link_problem("fields", {"fields": words},
                                                           site_id, remote)

        return field_words(self.answer("--fields", self.args.fields, "Profile fields that "
                                       f"travel, comma-separated, or '{ALL}'", ALL, check))

    def _initial_sync(self) -> bool:
        if self.args.initial_sync is not None:
            return bool(self.args.initial_sync == "true")
        if self.prompt is None:
            return True
        return self.prompt.confirm("When the link first starts, send the users the sites "
                                   "already have (its initial sync)?", True)


def rules_said(link: dict[str, Any]) -> str:
    """Who and what the link syncs, for the wizard's summary."""
    roles = link.get("roles", {})
    carried = frozenset(link.get("fields", LINK_FIELDS))
    said = link_rules.describe(frozenset(roles["outgoing"]) if "outgoing" in roles else None,
                               frozenset(roles["incoming"]) if "incoming" in roles else None,
                               carried, link.get("initial_sync", True))
    return said or ("every role, every profile field; its first start copies the users the "
                    "sites already have")
