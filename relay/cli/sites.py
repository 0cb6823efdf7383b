"""``userrelay sites``: the WordPress sites the relay serves.

``sites add`` is the guided set-up of a site, its key and its link (relay/cli/wizard.py).
``sites test SITE`` runs the connection test (relay/sites/connection_test.py), records it,
prints each check (for a failure: what is wrong and what to do) and exits 0 when it passed, 1
otherwise.
It runs beside a running daemon, which sees the result within a second.

The group's actions come from the modules in ``SITES_MODULES``, each exposing
``register_sites(actions, default_config)``: a new action is one line there.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
from typing import Any

from relay import config as config_module
from relay.cli import remove as cli_remove
from relay.config import Config
from relay.db.links import ACTIVE, TESTED, LinkBook, LinkState
from relay.errors import ConfigError
from relay.keys.keystore import KeyStore
from relay.sites.connection_report import ConnectionReport, record
from relay.sites.connection_test import DEFAULT_TIMEOUT, run_connection_test

#: Modules adding actions to ``userrelay sites``; each has ``register_sites(actions, default)``.
SITES_MODULES: tuple[str, ...] = ("relay.cli.wizard", "relay.cli.sites")
MARKS = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def register(commands: Any, default_config: str) -> None:
    sites = commands.add_parser("sites", help="the WordPress sites: add one (guided), list, "
                                "test its connection, remove")
    actions = sites.add_subparsers(dest="sites_command", metavar="ACTION", required=True)
    for name in SITES_MODULES:
        importlib.import_module(name).register_sites(actions, default_config)


def register_sites(actions: Any, default_config: str) -> None:
    test = actions.add_parser(
        "test", help="test the connection between the relay and a site's plugin, both ways "
        "(a link delivers only once both its sites passed)")
    test.add_argument("site")
    test.add_argument("--config", default=default_config, help="YAML configuration file")
    test.add_argument("--json", action="store_true", help="machine-readable output")
    test.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                      help=f"seconds each step may take (default {DEFAULT_TIMEOUT:g})")
    test.set_defaults(run=_test)
    cli_remove.register_sites(actions, default_config, "YAML configuration file")


def _test(args: argparse.Namespace) -> int:
    config = config_module.load(args.config)
    site_exists(config, args.site)
    keys = KeyStore(config.database_path, config.master_key_path)
    try:
        with LinkBook(config) as book:
            report = asyncio.run(run_connection_test(config, args.site, keys,
                                                     tests=book.site_tests(),
                                                     timeout=args.timeout))
            record(book, report)
            states = {link: state for link, state in book.states().items()
                      if args.site in (config.links[link].site, config.links[link].remote)}
    finally:
        keys.close()
    if args.json:
        print(json.dumps({**report.as_dict(),
                          "links": {k: v.as_dict() for k, v in states.items()}}, indent=2))
    else:
        print(render(config, report, states))
    return 0 if report.passed else 1


def site_exists(config: Config, site: str) -> None:
    if site not in config.sites:
        raise ConfigError(config.source, [f"sites: no site {site!r}; configured sites: "
                                          f"{', '.join(config.sites) or '(none)'}"])


def render(config: Config, report: ConnectionReport, states: dict[str, LinkState]) -> str:
    """The report for a terminal: one line per check, what to do under each failure."""
    site = config.sites[report.site]
    width = max(len(c.title) for c in report.checks)
    lines = [f"Connection test of site {site.id!r} ({site.label}) at {site.url}:"]
    for check in report.checks:
        lines.append(f"  {MARKS.get(check.status, check.status)}  {check.title:<{width}}  "
                     f"{check.detail}")
        if check.fix and check.status != "ok":
            lines.append(f"        {'':<{width}}  what to do: {check.fix}")
    failed = report.failed
    if report.passed:
        lines.append("Connection Test Successful")
    else:
        lines.append(f"Connection Test Failed: {len(failed)} check(s) failed "
                     f"({', '.join(c.title for c in failed) if failed else 'no key'}).")
    for link, state in states.items():
        lk = config.links[link]
        what = {ACTIVE: "active: it delivers",
                TESTED: f"tested: start it with {config.command(f'links start {link}')}"}.get(
                    state.state, f"{state.state}: {state.reason}")
        lines.append(f"Link {link} ({lk.site} -> {lk.remote}, {lk.direction}): {what}")
    return "\n".join(lines)
