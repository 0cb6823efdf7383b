"""``userrelay dead list|replay|purge``: dead letters, straight from the database.

Works with the daemon running or not: it opens the database itself (WAL; the writers take
turns), and a running daemon's couriers find replayed deliveries at their next look at the
queue. The filters are those of the admin API (relay/db/deadletters.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from typing import Any, TypeVar

from relay import config as config_module
from relay.db import deadletters
from relay.db.store import connect_sync, in_transaction
from relay.errors import UserRelayError
from relay.work.courier import IDLE_POLL

T = TypeVar("T")


def register(commands: Any, default_config: str) -> None:
    dead = commands.add_parser("dead", help="list, replay or purge dead letters")
    actions = dead.add_subparsers(dest="dead_command", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="the dead letters, most recent first")
    _filters(listing, default_config, with_ids=False)
    listing.add_argument("--limit", type=int, default=deadletters.DEFAULT_LIMIT,
                         help=f"show at most this many (default {deadletters.DEFAULT_LIMIT})")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(run=_list)

    replay = actions.add_parser("replay", help="send dead letters again, in their person's "
                                "order, attempts counted from zero")
    _filters(replay, default_config)
    replay.set_defaults(run=_replay)

    purge = actions.add_parser("purge", help="delete dead letters for good")
    _filters(purge, default_config)
    purge.set_defaults(run=_purge)


def _filters(parser: argparse.ArgumentParser, default_config: str, with_ids: bool = True
             ) -> None:
    parser.add_argument("--config", default=default_config, help="YAML configuration file")
    if with_ids:
        parser.add_argument("ids", nargs="*", type=int, metavar="DELIVERY",
                            help="delivery ids (as listed)")
        parser.add_argument("--all", action="store_true",
                            help="every dead letter (needed when nothing else is named)")
    parser.add_argument("--source", help="only those from this site")
    parser.add_argument("--target", help="only those to this site")
    parser.add_argument("--since", help="only those dead since: an ISO 8601 time (UTC unless "
                        "it says), unix seconds, or a duration ago such as 2h")
    parser.add_argument("--until", help="only those dead before (same forms)")


def _filter(args: argparse.Namespace, config: config_module.Config) -> deadletters.Filter:
    return deadletters.parse_filter({
        "ids": getattr(args, "ids", []), "source": args.source, "target": args.target,
        "since": args.since, "until": args.until, "all": getattr(args, "all", False)}, config)


def _list(args: argparse.Namespace) -> int:
    config = config_module.load(args.config)
    flt = _filter(args, config)
    limit = deadletters.parse_limit(args.limit)
    with _database(config) as conn:
        total, letters = deadletters.count(conn, flt), deadletters.list_dead(conn, flt, limit)
    if args.json:
        print(json.dumps({"count": total, "dead_letters": letters}, indent=2))
    else:
        print(deadletters.render(letters, total))
    return 0


def _replay(args: argparse.Namespace) -> int:
    config = config_module.load(args.config)
    flt = _filter(args, config)
    deadletters.require_choice(flt, "replay")
    replayed: dict[str, list[int]] = {}
    with _database(config) as conn:
        for batch in deadletters.in_batches(conn, flt):
            for target, ids in in_transaction(conn, deadletters.replay, batch, time.time()).items():
                replayed.setdefault(target, []).extend(ids)
    total = sum(len(ids) for ids in replayed.values())
    if not total:
        print("No dead letters matched; nothing was replayed.")
        return 0
    per_target = ", ".join(f"{len(ids)} to {target}" for target, ids in sorted(replayed.items()))
    print(f"Replayed {total} dead letter(s) ({per_target}). A running relay sends them within "
          f"{IDLE_POLL:.0f} seconds; a stopped one when it starts.")
    return 0


def _purge(args: argparse.Namespace) -> int:
    config = config_module.load(args.config)
    flt = _filter(args, config)
    deadletters.require_choice(flt, "purge")
    with _database(config) as conn:
        purged = in_transaction(conn, deadletters.purge, flt)
    print(f"Purged {purged} dead letter(s).")
    return 0


@contextlib.contextmanager
def _database(config: config_module.Config) -> Iterator[sqlite3.Connection]:
    """A connection of this command's own; a database error ends in one clear message."""
    try:
        conn = connect_sync(config.database_path)
    except sqlite3.Error as exc:
        raise UserRelayError(f"cannot open the database {config.database_path}: {exc}") from None
    try:
        yield conn
    except sqlite3.Error as exc:
        raise UserRelayError(f"the database {config.database_path} failed: {exc}") from None
    finally:
        conn.close()
