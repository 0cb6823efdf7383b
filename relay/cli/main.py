"""The ``userrelay`` command: serve, check-config, init, status, keys generate and rotate; the
other command groups register themselves from their own modules (``COMMAND_MODULES``).

Every failure a user can cause ends in one clear message on stderr and a non-zero exit,
never a traceback. Every command names its configuration with ``--config FILE``; without it,
``$USERRELAY_CONFIG``, else ``config.yaml`` in the current folder. A hint a command prints
is a command that works when pasted (``Config.command``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sqlite3
import sys
import time
from typing import IO

import structlog

from relay import __version__, logs
from relay import config as config_module
from relay.config import Config
from relay.daemon import process as daemon
from relay.daemon import startup
from relay.db import links as links_db
from relay.db import status as status_module
from relay.db.store import connect_sync
from relay.errors import ConfigError, UserRelayError
from relay.keys.keystore import KeyStore
from relay.sites import role_check

log = structlog.get_logger("relay.cli.main")
DEFAULT_CONFIG = config_module.default_file()
CONFIG_HELP = ("YAML configuration file (default: $USERRELAY_CONFIG, else config.yaml in the "
               f"current folder; now {DEFAULT_CONFIG})")
#: Modules adding command groups; each has ``register(commands, default_config)``.
COMMAND_MODULES: tuple[str, ...] = ("relay.cli.sites", "relay.cli.dead", "relay.cli.links",
                                    "relay.cli.reconcile")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except UserRelayError as exc:
        print(f"userrelay: {exc}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:
        print(f"userrelay: the database failed: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"userrelay: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("userrelay: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="userrelay", description="Keeps the users of several WordPress sites in step.",
        epilog="Every command takes --config FILE; without it, the file named by "
        "$USERRELAY_CONFIG, else config.yaml in the current folder.")
    parser.add_argument("--version", action="version", version=f"userrelay {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the relay daemon")
    serve.add_argument("--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    serve.set_defaults(run=_serve)

    check = commands.add_parser(
        "check-config", help="validate a configuration file and everything `serve` checks "
        "before it starts (database, master key, admin token)")
    check.add_argument("file", nargs="?", metavar="FILE", help="the file (same as --config)")
    check.add_argument("--config", help=CONFIG_HELP)
    check.set_defaults(run=_check_config)

    init = commands.add_parser(
        "init", help="make the database and the master key that encrypts the site keys "
        "(`keys generate` and `sites add` do it too, for the first key)")
    init.add_argument("--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    init.add_argument("--new-master-key", action="store_true",
                      help="the master key is lost for good: make a new one and remove every "
                      "site's key (each site then needs a new key: keys generate SITE)")
    init.set_defaults(run=_init)

    status = commands.add_parser("status", help="what is queued, dead-lettered or paused")
    status.add_argument("--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(run=_status)

    keys = commands.add_parser("keys", help="site API keys")
    key_commands = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    generate = key_commands.add_parser(
        "generate", help="make a new key for a site (printed once; the old key stops at once)")
    generate.add_argument("site")
    generate.add_argument("--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    generate.set_defaults(run=_generate_key)
    rotate = key_commands.add_parser(
        "rotate", help="make a new key for a site (printed once); the old one stops at once, "
        "or after --grace minutes")
    rotate.add_argument("site")
    rotate.add_argument("--grace", type=_minutes, default=0.0, metavar="MINUTES",
                        help="keep accepting the previous key from the site this long, while "
                        "the new one is pasted there (default 0: it stops at once)")
    rotate.add_argument("--config", default=DEFAULT_CONFIG, help=CONFIG_HELP)
    rotate.set_defaults(run=_generate_key)

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(commands, DEFAULT_CONFIG)
    return parser


def _check_config(args: argparse.Namespace, out: IO[str] = sys.stdout) -> int:
    if args.file and args.config and args.file != args.config:
        raise UserRelayError(f"two files given ({args.file} and --config {args.config}); "
                             "give one")
    path = args.file or args.config or DEFAULT_CONFIG
    config = config_module.load(path)
    startup.check(config)
    print(f"{path}: OK ({len(config.sites)} sites, {len(config.links)} links; database "
          f"{config.database_path})", file=out)
    for note in config.notes:
        print(f"note: {note}", file=out)
    for warning in _role_warnings(config):
        print(f"warning: {warning}", file=out)
    return 0


def _role_warnings(config: Config) -> list[str]:
    """Roles the links name that a site lacks, as its last connection test listed them."""
    if not config.links or not config.database_path.exists():
        return []
    conn = connect_sync(config.database_path)
    try:
        return role_check.warnings(config, links_db.site_tests(conn))
    finally:
        conn.close()


def _init(args: argparse.Namespace) -> int:
    config = config_module.load(args.config)
    store = KeyStore(config.database_path, config.master_key_path, config.flag,
                     require_master=not args.new_master_key)
    try:
        if args.new_master_key:
            removed, moved = store.new_master_key()
            print(f"Made a new master key in {config.master_key_path}"
                  + (f" (the old file was moved to {moved})" if moved else "") + ".")
            if removed:
                print("The keys of " + ", ".join(removed) + " were removed: each site needs a "
                      "new key, pasted into it, and a new connection test:\n\n" + "\n".join(
                          f"    {config.command(f'keys generate {s}')}" for s in removed))
            return 0
        store._master_key(create=True)
        if store.created_master is not None:
            print(f"Made the master key {store.created_master} (mode 0600); back it up apart "
                  "from the database: without it the site keys cannot be opened.")
        else:
            print(f"The master key {config.master_key_path} is there already; nothing to do.")
        print(f"Database: {config.database_path}")
    finally:
        store.close()
    return 0


def _status(args: argparse.Namespace) -> int:
    config = config_module.load(args.config)
    conn = connect_sync(config.database_path)
    try:
        current = status_module.snapshot(conn, config)
    finally:
        conn.close()
    print(json.dumps(current, indent=2) if args.json
          else status_module.render(current, config.flag))
    return 0


def _generate_key(args: argparse.Namespace) -> int:
    config = config_module.load(args.config)
    if args.site not in config.sites:
        raise ConfigError(args.config, [f"sites: no site {args.site!r}; configured sites: "
                                        f"{', '.join(config.sites) or '(none)'}"])
    grace = getattr(args, "grace", 0.0) * 60
    store = KeyStore(config.database_path, config.master_key_path,
                     config.flag)
    try:
        key = store.rotate(args.site, grace)
        until = store.grace_until(args.site)
        created = store.created_master
    finally:
        store.close()
    site = config.sites[args.site]
    if created is not None:
        print(f"Made the master key {created} (mode 0600): it encrypts the site keys in the "
              "database. Back it up apart from the database.\n")
    previous = ("Any previous key of this site no longer works." if until is None else
                f"The previous key is still accepted from the site until "
                f"{time.strftime('%H:%M:%S UTC', time.gmtime(until))} ({grace / 60:g} min).")
    links = [lk.id for lk in config.links.values() if site.id in (lk.site, lk.remote)]
    held = (f"\nLinks of this site ({', '.join(links)}) deliver nothing until it passes a "
            f"connection test with the new key:\n\n    {config.command(f'sites test {site.id}')}\n"
            if links else "")
    print(f"New API key for site {site.id!r} ({site.label}). It is shown only this once;\n"
          f"paste it into that site's wp-config.php as\n\n"
          f"    define( 'USERRELAY_KEY', '{key.secret}' );\n\n"
          f"or into Settings > UserRelay there. {previous}{held}")
    return 0


def _minutes(text: str) -> float:
    try:
        minutes = float(text)
    except ValueError:
        minutes = -1.0
    if not 0 <= minutes <= 7 * 24 * 60:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected minutes from 0 to 10080 "
                                         "(a week)")
    return minutes


def _serve(args: argparse.Namespace) -> int:
    logs.configure(args.log_level)
    daemon.run(config_module.load(args.config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
