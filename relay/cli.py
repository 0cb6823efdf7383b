"""The ``userrelay`` command: serve, check-config, status, keys generate.

Every failure a user can cause ends in one clear message on stderr and a non-zero exit,
never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import importlib
import json
import os
import signal
import sys
from typing import IO

import structlog
from aiohttp import web

from relay import __version__, logs
from relay import config as config_module
from relay import status as status_module
from relay.app import create_app
from relay.config import Config
from relay.errors import ConfigError, UserRelayError
from relay.keystore import KeyStore
from relay.store import connect_sync

log = structlog.get_logger("relay.cli")
DEFAULT_CONFIG = os.environ.get("USERRELAY_CONFIG", "config.yaml")
#: Modules adding command groups; each has ``register(commands, default_config)``.
COMMAND_MODULES: tuple[str, ...] = ()


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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="userrelay", description="Keeps the users of several "
                                     "WordPress sites in step.")
    parser.add_argument("--version", action="version", version=f"userrelay {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the relay daemon")
    serve.add_argument("--config", default=DEFAULT_CONFIG, help="YAML configuration file")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    serve.set_defaults(run=_serve)

    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file")
    check.set_defaults(run=_check_config)

    status = commands.add_parser("status", help="what is queued, dead-lettered or paused")
    status.add_argument("--config", default=DEFAULT_CONFIG, help="YAML configuration file")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(run=_status)

    keys = commands.add_parser("keys", help="site API keys")
    key_commands = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    generate = key_commands.add_parser(
        "generate", help="make a new key for a site (printed once; the old key stops at once)")
    generate.add_argument("site")
    generate.add_argument("--config", default=DEFAULT_CONFIG, help="YAML configuration file")
    generate.set_defaults(run=_generate_key)

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(commands, DEFAULT_CONFIG)
    return parser


def _check_config(args: argparse.Namespace, out: IO[str] = sys.stdout) -> int:
    config = config_module.load(args.file)
    print(f"{args.file}: OK ({len(config.sites)} sites, {len(config.links)} links)", file=out)
    return 0


def _status(args: argparse.Namespace) -> int:
    config = config_module.load(args.config)
    conn = connect_sync(config.database_path)
    try:
        current = status_module.snapshot(conn, config)
    finally:
        conn.close()
    print(json.dumps(current, indent=2) if args.json else status_module.render(current))
    return 0


def _generate_key(args: argparse.Namespace) -> int:
    config = config_module.load(args.config)
    if args.site not in config.sites:
        raise ConfigError(args.config, [f"sites: no site {args.site!r}; configured sites: "
                                        f"{', '.join(config.sites) or '(none)'}"])
    store = KeyStore(config.database_path, config.master_key_path)
    try:
        key = store.generate(args.site)
    finally:
        store.close()
    site = config.sites[args.site]
    print(f"New API key for site {site.id!r} ({site.label}). It is shown only this once;\n"
          f"paste it into that site's wp-config.php as\n\n"
          f"    define( 'USERRELAY_KEY', '{key.secret}' );\n\n"
          f"or into Settings > UserRelay there. Any previous key of this site no longer works.")
    return 0


def _serve(args: argparse.Namespace) -> int:
    logs.configure(args.log_level)
    config = config_module.load(args.config)
    lock = _lock(config)
    try:
        try:
            import uvloop
        except ImportError:
            asyncio.run(serve(config))
        else:
            uvloop.run(serve(config))
    finally:
        lock.close()
    return 0


def _lock(config: Config) -> IO[bytes]:
    """One relay process per database: leases left behind are then known to be stale."""
    path = config.database_path.with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "wb")  # noqa: SIM115 - held for the life of the process
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UserRelayError(f"another relay is already running on {config.database_path}") \
            from None
    return handle


async def serve(config: Config) -> None:
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           shutdown_timeout=config["delivery.shutdown_grace"])
    await runner.setup()
    site = web.TCPSite(runner, config["listen.host"], config["listen.port"])
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise UserRelayError(f"cannot listen on {config['listen.host']}:"
                             f"{config['listen.port']}: {exc.strerror}") from None
    host, port = runner.addresses[0][:2]
    log.info("relay_started", host=host, port=port, database=str(config.database_path),
             sites=sorted(config.sites), links=sorted(config.links), pid=os.getpid())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("relay_stopping", grace=config["delivery.shutdown_grace"])
    await runner.cleanup()
    log.info("relay_stopped")


if __name__ == "__main__":
    raise SystemExit(main())
