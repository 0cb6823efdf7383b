"""The daemon: ``userrelay serve`` from start to exit, reloads included.

Owns the process: one relay per database (a lock file), the listening socket for the whole
process life, the current aiohttp app, signals (SIGTERM/SIGINT stop, SIGHUP reloads the
configuration file) and what systemd is told. It knows nothing of how events are handled:
that is ``relay.app``.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import socket
import sqlite3
from typing import IO

import structlog
from aiohttp import web

from relay import config as config_module
from relay import systemd
from relay.app import create_app
from relay.config import Config
from relay.errors import ConfigError, UserRelayError
from relay.metrics import Metrics, not_ready

log = structlog.get_logger("relay.daemon")


def run(config: Config) -> None:
    """Serve until told to stop, on uvloop when it is installed."""
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
    """Run the relay until SIGTERM or SIGINT; SIGHUP re-reads the configuration file.

    Tells systemd (when it started us) READY=1 once the database is open and the port is
    bound, RELOADING=1 then READY=1 around a reload, STOPPING=1 on the way out, and pings
    its watchdog while the couriers, the group commit and the database answer.
    """
    systemd.notify("STATUS=Starting")
    # Handled from the start: a reload asked for as soon as we say READY must not kill us.
    signals: asyncio.Queue[int] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(signum, signals.put_nowait, signum)
    daemon = _Daemon()
    await daemon.start(config)
    host, port = daemon.address
    log.info("relay_started", host=host, port=port, database=str(config.database_path),
             sites=sorted(config.sites), links=sorted(config.links), pid=os.getpid())
    systemd.notify("READY=1", f"STATUS={daemon.status()}")
    interval = systemd.watchdog_interval()
    watchdog = (asyncio.create_task(systemd.watchdog(interval, daemon.alive), name="watchdog")
                if interval else None)
    while await signals.get() == signal.SIGHUP:
        await _reload(daemon)
    systemd.notify("STOPPING=1", "STATUS=Stopping: letting in-flight deliveries finish")
    log.info("relay_stopping", grace=daemon.config["delivery.shutdown_grace"])
    if watchdog is not None:
        watchdog.cancel()
    await daemon.stop(closing=True)
    log.info("relay_stopped")


class _Daemon:
    """The running relay: one listening socket for its whole life, and the current app.

    A reload replaces the app but keeps the socket open, so connections arriving meanwhile
    wait in its backlog for the new app instead of being refused.
    """

    def __init__(self) -> None:
        self.metrics = Metrics()  # carried across reloads: counters do not restart at zero
        self.listener: socket.socket | None = None
        self.runner: web.AppRunner | None = None
        self.config: Config

    @property
    def address(self) -> tuple[str, int]:
        assert self.listener is not None
        host, port = self.listener.getsockname()[:2]
        return str(host), int(port)

    def status(self) -> str:
        host, port = self.address
        return (f"Listening on {host}:{port}; {len(self.config.sites)} sites, "
                f"{len(self.config.links)} links")

    async def start(self, config: Config) -> None:
        """Open the database, start the workers, then take connections: in that order."""
        runner = web.AppRunner(create_app(config, self.metrics), access_log=None,
                               handle_signals=False,
                               shutdown_timeout=config["delivery.shutdown_grace"])
        try:
            await runner.setup()
            if self.listener is None:
                self.listener = _listen(config["listen.host"], config["listen.port"])
            await web.SockSite(runner, self.listener.dup()).start()
        except BaseException:
            await runner.cleanup()
            raise
        self.config, self.runner = config, runner

    async def stop(self, closing: bool = False) -> None:
        """Stop taking requests, let the couriers finish (within the grace), close the app.

        ``closing``: for good; new connections are refused from now on.
        """
        if closing and self.listener is not None:
            self.listener.close()  # the app's own copy of the socket closes with its site
        runner, self.runner = self.runner, None
        if runner is not None:
            await runner.cleanup()

    async def alive(self) -> dict[str, str]:
        """What is not working (for the watchdog); nothing while a reload swaps the apps,
        which the shutdown grace bounds."""
        if self.runner is None:
            return {}
        return await not_ready(self.runner.app, write=False)


def _listen(host: str, port: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                    flags=socket.AI_PASSIVE)[0][0]
        return socket.create_server((host, port), family=family, backlog=128)
    except OSError as exc:
        raise UserRelayError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


async def _reload(daemon: _Daemon) -> None:
    """Apply the configuration file again; a bad one is logged and the running one stays.

    Nothing acknowledged is lost: the old app is shut down as on SIGTERM (requests answered,
    in-flight deliveries finished or their leases released), and what is queued is in the
    database, where the new app's couriers find it.
    """
    systemd.notify("RELOADING=1", systemd.monotonic_usec(), "STATUS=Reloading the configuration")
    running = daemon.config
    log.info("relay_reloading", source=running.source)
    note = "; the last reload was refused, see the log"
    try:
        config = config_module.load(running.source)
        _check_reloadable(running, config)
    except ConfigError as exc:
        _log_problems(exc)
        log.error("reload_rejected", source=exc.source, problems=len(exc.problems),
                  kept="the running configuration")
    else:
        await daemon.stop()
        try:
            await daemon.start(config)
        except (UserRelayError, OSError, sqlite3.Error) as exc:
            if isinstance(exc, ConfigError):  # found only at start, e.g. an unreadable file
                _log_problems(exc)
            else:
                log.error("reload_problem", source=running.source, problem=str(exc))
            log.error("reload_failed", source=running.source, kept="the running configuration")
            try:
                await daemon.start(running)
            except (UserRelayError, OSError, sqlite3.Error) as again:
                raise UserRelayError(f"cannot start again after a reload, with the new "
                                     f"configuration or the old: {again}") from None
        else:
            log.info("relay_reloaded", source=running.source, sites=sorted(config.sites),
                     links=sorted(config.links))
            note = ""
    systemd.notify("READY=1", f"STATUS={daemon.status()}{note}")


def _log_problems(exc: ConfigError) -> None:
    for problem in exc.problems:
        log.error("reload_problem", source=exc.source, problem=problem)


def _check_reloadable(running: Config, new: Config) -> None:
    """What a reload cannot change: where the relay listens, its database and master key."""
    problems = [
        f"{key}: got {now!r}; the running relay has {was!r}, which only a restart changes "
        "(systemctl restart userrelay)"
        for key, was, now in (
            ("listen.host", running["listen.host"], new["listen.host"]),
            ("listen.port", running["listen.port"], new["listen.port"]),
            ("database", str(running.database_path), str(new.database_path)),
            ("master_key_file", str(running.master_key_path), str(new.master_key_path)))
        if was != now]
    if problems:
        raise ConfigError(new.source, problems)
