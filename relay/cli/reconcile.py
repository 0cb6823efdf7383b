"""``userrelay reconcile`` (formerly ``drift``): compare a link's two sites, report what
differs, and repair it when asked.

See relay/work/reconcile.py for how the sites are compared and repaired.

Like ``links start``, it stops at once, saying what to do, when a site of the link has not
passed a connection test: an untested site is not contacted.

Works with the daemon running or not: it reads both sites itself and opens the database itself
(WAL); repairs are queued like any other event, and a running daemon's couriers find them at
their next look at the queue.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from relay import config as config_module
from relay import logs
from relay.db.links import LinkBook
from relay.db.store import connect_sync, in_transaction
from relay.errors import ConfigError, UserRelayError
from relay.keys.keystore import KeyStore
from relay.model.reconciliation import Report
from relay.work import reconcile

#: Entries shown in the text report; ``--json`` has them all.
SHOWN = 50


def register(commands: Any, default_config: str) -> None:
    drift = commands.add_parser("reconcile", aliases=["drift"],
                                help="compare the two sites of a link and report what differs "
                                "(--repair queues the fixes); `drift` is its former name")
    drift.add_argument("link")
    drift.add_argument("--repair", action="store_true", help="queue the fixes as events from "
                       "their source, through the ordinary path (obeying the link's actions)")
    drift.add_argument("--json", action="store_true", help="machine-readable output")
    drift.add_argument("--page-size", type=int, default=reconcile.PAGE_SIZE,
                       help=f"users asked of a site at a time (default {reconcile.PAGE_SIZE})")
    drift.add_argument("--config", default=default_config, help="YAML configuration file")
    drift.set_defaults(run=_drift)


def _drift(args: argparse.Namespace) -> int:
    logs.configure("warning")  # the report is the output; log lines go to stderr, if any
    if getattr(args, "command", None) == "drift":
        print("note: `userrelay drift` is now `userrelay reconcile`; the old name still works",
              file=sys.stderr)
    config = config_module.load(args.config)
    if args.link not in config.links:
        raise ConfigError(args.config, [f"links: no link {args.link!r}; configured links: "
                                        f"{', '.join(config.links) or '(none)'}"])
    with LinkBook(config) as book:
        state = book.state(args.link)
    if state.missing:  # as `links start`: a site not tested is not contacted
        raise UserRelayError(f"link {args.link!r} cannot be compared yet: "
                             f"{'; '.join(state.missing)}")
    conn = connect_sync(config.database_path)
    keys = KeyStore(config.database_path, config.master_key_path, config.flag)

    async def read(fn: Any, *fn_args: Any) -> Any:
        return fn(conn, *fn_args)

    async def write(fn: Any, *fn_args: Any) -> Any:
        return in_transaction(conn, fn, *fn_args)

    try:
        report = asyncio.run(reconcile.reconcile(config, args.link, keys, read, write,
                                                 repair=args.repair,
                                                 page_size=max(1, args.page_size)))
    finally:
        keys.close()
        conn.close()
    print(json.dumps(report.as_dict(), indent=2) if args.json else render(report))
    return 0


def render(report: Report) -> str:
    s = report.summary()
    sites = " and ".join(f"{site} ({n} users)" for site, n in report.users.items())
    lines = [f"Link {report.link} ({report.direction}), run {report.run}: compared {sites} "
             f"on {', '.join(report.groups) or 'presence only'} in "
             f"{s['finished_at'] - s['started_at']:.1f}s",
             f"  in step: {s['in_step']}; missing: {s['missing']}; differ: {s['differs']}; "
             f"conflicts: {s['conflicts']}"]
    for entry in report.entries[:SHOWN]:
        ids = ", ".join(f"{site} #{uid}" if uid is not None else f"not on {site}"
                        for site, uid in entry.users.items())
        what = (f"differs in {', '.join(entry.groups)}" if entry.groups else "missing")
        fix = (f"; repair: {' '.join(entry.repair)} from {entry.source} to {entry.target}"
               if entry.repair else "; not repairable")
        lines.append(f"  {entry.kind.upper():8} {entry.match} ({ids}): {what}; "
                     f"{entry.decided}{fix}")
    if len(report.entries) > SHOWN:
        lines.append(f"  … and {len(report.entries) - SHOWN} more (--json lists them all)")
    if report.enqueued is not None:
        lines.append(f"Repair: {report.enqueued} events queued (ids repair-{report.link}-"
                     f"{report.run}-<user id>), delivered as any other change.")
    elif s["repairable"]:
        lines.append(f"Run with --repair to queue {s['repairable']} fixes.")
    lines.append(f"Finished {time.strftime('%H:%M:%S UTC', time.gmtime(s['finished_at']))}.")
    return "\n".join(lines)
