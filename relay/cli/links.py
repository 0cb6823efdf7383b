"""``userrelay links``: list links with their state, start and pause them, show the progress
of a link's initial sync.

A link delivers only once both its sites passed a connection test (``userrelay sites test``)
and it was started; see relay/db/links.py for the states. A running daemon sees what these
commands do within a second.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from relay import config as config_module
from relay.cli import remove as cli_remove
from relay.config import Config, Link, link_rules
from relay.db import cursors
from relay.db.links import ACTIVE, PAUSED, TESTED, LinkBook, LinkState


def register(commands: Any, default_config: str) -> None:
    links = commands.add_parser("links", help="links between sites: list, start, pause, "
                                "progress, edit, remove")
    actions = links.add_subparsers(dest="links_command", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="every link, its state and what it lacks")
    listing.add_argument("--config", default=default_config, help="YAML configuration file")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(run=_list)

    start = actions.add_parser(
        "start", help="make a tested link active, or resume a paused one (both its sites must "
        "have passed a connection test since their URL or key last changed)")
    start.add_argument("link")
    start.add_argument("--config", default=default_config, help="YAML configuration file")
    start.set_defaults(run=_start)

    progress = actions.add_parser(
        "initial-sync", aliases=["progress"],
        help="how far a link's initial sync is: users done of total, rate, time left "
             "(`progress` is its former name)")
    progress.add_argument("link")
    progress.add_argument("--config", default=default_config, help="YAML configuration file")
    progress.add_argument("--json", action="store_true", help="machine-readable output")
    progress.set_defaults(run=_progress)

    pause = actions.add_parser("pause", help="stop delivering on a link (events keep queueing)")
    pause.add_argument("link")
    pause.add_argument("--reason", help="why, shown in status and logs")
    pause.add_argument("--config", default=default_config, help="YAML configuration file")
    pause.set_defaults(run=_pause)
    cli_remove.register_links(actions, default_config, "YAML configuration file")


def _list(args: argparse.Namespace) -> int:
    config = config_module.load(args.config)
    with LinkBook(config) as book:
        states = book.states()
    if args.json:
        print(json.dumps({k: v.as_dict() for k, v in states.items()}, indent=2))
    else:
        print("\n".join(describe(config, s) + _rules(config.links[s.link])
                        for s in states.values()) or "No links configured.")
    return 0


def _start(args: argparse.Namespace) -> int:
    config = config_module.load(args.config)
    with LinkBook(config) as book:
        before = book.state(args.link)
        after = book.start(args.link)
    if before.state == ACTIVE:
        print(f"{describe(config, after)} (it already was)")
    else:
        print(f"{describe(config, after)}; what is queued for it goes out now")
    if not before.started and config.links[args.link].initial_sync:
        print(f"Its initial sync sends the users the sites already have; "
              f"{config.command(f'links initial-sync {args.link}')} shows how far it is.")
    elif not before.started:
        print("It has initial_sync: false: the users the sites already have stay where they "
              "are; changes from now on, and \"send now\" from wp-admin, go across.")
    return 0


def _progress(args: argparse.Namespace) -> int:
    config = config_module.load(args.config)
    with LinkBook(config) as book:
        book.state(args.link)  # an unknown link fails here, naming the configured ones
        found = book.call(cursors.progress, config, args.link)
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        print(cursors.render(args.link, found, bar=sys.stdout.isatty()))
    return 0


def _pause(args: argparse.Namespace) -> int:
    config = config_module.load(args.config)
    with LinkBook(config) as book:
        state = book.pause(args.link, args.reason)
    print(f"{describe(config, state)}. Events keep queueing; "
          f"{config.command(f'links start {args.link}')} resumes it.")
    return 0


def _rules(link: Link) -> str:
    said = link_rules.describe(link.roles_outgoing, link.roles_incoming, link.fields,
                               link.initial_sync)
    return f"\n    {said}" if said else ""


def describe(config: Config, state: LinkState) -> str:
    link = config.links[state.link]
    head = f"Link {state.link} ({link.site} -> {link.remote}, {link.direction})"
    if state.state == ACTIVE:
        return f"{head}: active, delivering"
    if state.state == TESTED:
        return (f"{head}: tested, not started; {config.command(f'links start {state.link}')} "
                "starts it")
    if state.state == PAUSED:
        return f"{head}: paused: {state.reason}"
    resumes = " (it was started: it delivers again once tested)" if state.started else ""
    return f"{head}: draft{resumes}: {state.reason}"
