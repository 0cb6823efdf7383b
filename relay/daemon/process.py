"""The daemon: ``userrelay serve`` from start to exit, reloads included.

Owns the process: one relay per database (a lock file holding its PID), the listening socket
and one HTTP server for the whole process life, the current aiohttp app behind that server,
signals (SIGTERM/SIGINT stop, SIGHUP reloads the configuration file) and what systemd is told.
It knows nothing of how events are handled: that is ``relay.web.app``.

A reload never closes a connection: the server stays, only the app behind it is swapped.
Requests arriving during the swap wait for the new app (at most ``RELOAD_WAIT``); requests in
progress finish on the old one before it is shut down. Anything wrong with a new
configuration, however malformed the file, keeps the running one.

Every start-up failure ends the process with one message and a non-zero code, closing what
was already opened (``relay.daemon.startup`` checks the files before anything is opened).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from relay import config as config_module
from relay.config import Config
from relay.daemon import startup, systemd
from relay.errors import ConfigError, UserRelayError
from relay.web import guard
from relay.web.app import create_app
from relay.web.appkeys import RELOAD
from relay.web.metrics import not_ready
from relay.work.metrics import Metrics

log = structlog.get_logger("relay.daemon.process")
#: Longest a request arriving during a reload waits for the new app before a 503.
RELOAD_WAIT = 60.0


def run(config: Config) -> None:
    """Serve until told to stop, on uvloop when it is installed."""
    startup.check(config)  # the files, before anything is opened: fails with one message
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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+b")  # noqa: SIM115 - held for the life of the process
    except OSError as exc:
        raise UserRelayError(f"cannot open the lock file {path}: {exc.strerror or exc} "
                             "(beside the database; the setting `database`)") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().decode(errors="replace").strip()
        handle.close()
        who = f" (PID {holder})" if holder.isdigit() else ""
        raise UserRelayError(
            f"another relay{who} is already running on the database {config.database_path}: "
            f"stop it first, or give {config.source} a database of its own (the setting "
            "`database`)") from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n".encode())
    handle.flush()
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
    daemon.reload = lambda: signals.put_nowait(signal.SIGHUP)  # the admin API's reload
    watchdog: asyncio.Task[None] | None = None
    try:
        await daemon.start(config)
        host, port = daemon.address
        log.info("relay_started", host=host, port=port, database=str(config.database_path),
                 sites=sorted(config.sites), links=sorted(config.links), pid=os.getpid())
        for note in config.notes:
            log.warning("config_note", source=config.source, note=note)
        systemd.notify("READY=1", f"STATUS={daemon.status()}")
        interval = systemd.watchdog_interval()
        watchdog = (asyncio.create_task(systemd.watchdog(interval, daemon.alive),
                                        name="watchdog") if interval else None)
        while await signals.get() == signal.SIGHUP:
            await _reload(daemon)
        systemd.notify("STOPPING=1", "STATUS=Stopping: letting in-flight deliveries finish")
        log.info("relay_stopping", grace=daemon.config.delivery.shutdown_grace)
    finally:
        if watchdog is not None:
            watchdog.cancel()
        await daemon.stop(closing=True)
    log.info("relay_stopped")


class _Daemon:
    """The running relay: one listening socket and one HTTP server for its whole life, and
    the current app behind them.

    The server hands each request to the current app. A reload swaps the app: new requests
    wait (``serving`` is clear), those in progress finish, the old app shuts down as on
    SIGTERM, the new one starts, and the waiting requests go on to it.
    """

    def __init__(self) -> None:
        self.metrics = Metrics()  # carried across reloads: counters do not restart at zero
        self.listener: socket.socket | None = None
        self.server: web.Server | None = None
        self._accepting: asyncio.AbstractServer | None = None
        self.runner: web.AppRunner | None = None
        self.config: Config
        self.reload: Callable[[], None] | None = None
        self.serving = asyncio.Event()
        self.closing = False
        self._in_progress = 0
        self._idle = asyncio.Event()
        self._idle.set()

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
        if self.listener is None:
            # Bound first, so that a busy port fails before anything is opened; connections
            # wait in its backlog until the app is ready.
            self.listener = _listen(config)
        app = create_app(config, self.metrics)
        if self.reload is not None:
            app[RELOAD] = self.reload
        runner = web.AppRunner(app, access_log=None,
                               handle_signals=False,
                               shutdown_timeout=config.delivery.shutdown_grace)
        try:
            await runner.setup()
        except BaseException:
            await runner.cleanup()
            raise
        self.config, self.runner = config, runner
        if self.server is None:
            self.server = web.Server(self._handle, request_factory=self._make_request,
                                     access_log=None, keepalive_timeout=guard.IDLE_TIMEOUT,
                                     read_bufsize=guard.READ_BUFFER)
            # Connections past the file limit's share refused, slow clients cut off
            # (relay/web/guard.py): the listener serves through the guard, reload after reload.
            self._accepting = await asyncio.get_running_loop().create_server(
                guard.protect(self.server), sock=self.listener.dup(), backlog=128)
        self.serving.set()

    def _make_request(self, message: Any, payload: Any, protocol: RequestHandler,
                      writer: Any, task: asyncio.Task[None]) -> web.BaseRequest:
        return web.Request(message, payload, protocol, writer, task,
                           asyncio.get_running_loop(),
                           client_max_size=self.config.ingest.max_body_bytes)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if not self.serving.is_set() and not self.closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.serving.wait(), RELOAD_WAIT)
        runner = self.runner
        if runner is None or runner.server is None or not self.serving.is_set():
            return web.json_response({"error": "the relay is restarting; try again shortly"},
                                     status=503, headers={"Retry-After": "5"})
        self._in_progress += 1
        self._idle.clear()
        try:
            response: web.StreamResponse = await runner.server.request_handler(request)
            return response
        finally:
            self._in_progress -= 1
            if not self._in_progress:
                self._idle.set()

    async def stop_app(self) -> None:
        """Let the requests in progress finish (within the grace), then shut the app down
        as on SIGTERM: couriers finish, pending commits land, the database closes."""
        self.serving.clear()
        runner, self.runner = self.runner, None
        if runner is None:
            return
        try:
            await asyncio.wait_for(self._idle.wait(), self.config.delivery.shutdown_grace)
        except TimeoutError:
            log.warning("requests_cut_off", requests=self._in_progress,
                        grace=self.config.delivery.shutdown_grace)
        await runner.cleanup()

    async def stop(self, closing: bool = False) -> None:
        """Stop taking requests, let the couriers finish (within the grace), close the app.

        ``closing``: for good; new connections are refused from now on.
        """
        if not closing:
            await self.stop_app()
            return
        self.closing = True
        self.serving.set()  # requests waiting for a reload to end go on (or get a 503)
        if self._accepting is not None:
            self._accepting.close()
        if self.listener is not None:
            self.listener.close()
        if self.server is not None:
            self.server.pre_shutdown()  # idle connections close; requests in progress finish
            grace = self.config.delivery.shutdown_grace if self.runner else 1.0
            await self.server.shutdown(grace)
        await self.stop_app()

    async def alive(self) -> dict[str, str]:
        """What is not working (for the watchdog); nothing while a reload swaps the apps,
        which the shutdown grace bounds."""
        if self.runner is None:
            return {}
        return await not_ready(self.runner.app, write=False)


def _listen(config: Config) -> socket.socket:
    host, port = config.listen.host, config.listen.port
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                    flags=socket.AI_PASSIVE)[0][0]
        return socket.create_server((host, port), family=family, backlog=128)
    except OSError as exc:
        holder = port_holder(port) if port else None
        who = f" (held by PID {holder})" if holder else ""
        raise UserRelayError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}{who}; stop what holds it, "
            f"or choose another port with the setting listen.port in {config.source}") \
            from None


def port_holder(port: int) -> int | None:
    """The PID of a process listening on TCP ``port`` on this machine, when we may see it."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and \
                    int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(proc.name)
        except OSError:
            continue
    return None


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
    except Exception as exc:  # a file no check foresaw: still never the end of the relay
        log.exception("reload_problem", source=running.source, problem=f"cannot be read: {exc}")
        log.error("reload_rejected", source=running.source, problems=1,
                  kept="the running configuration")
    else:
        await daemon.stop()
        try:
            await daemon.start(config)
        except Exception as exc:
            if isinstance(exc, ConfigError):  # found only at start, e.g. an unreadable file
                _log_problems(exc)
            elif isinstance(exc, UserRelayError | OSError | sqlite3.Error):
                log.error("reload_problem", source=running.source, problem=str(exc))
            else:
                log.exception("reload_problem", source=running.source, problem=str(exc))
            log.error("reload_failed", source=running.source, kept="the running configuration")
            try:
                await daemon.start(running)
            except Exception as again:  # noqa: BLE001 - said as one error, the reason kept
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
            ("listen.host", running.listen.host, new.listen.host),
            ("listen.port", running.listen.port, new.listen.port),
            ("database", str(running.database_path), str(new.database_path)),
            ("master_key_file", str(running.master_key_path), str(new.master_key_path)))
        if was != now]
    if problems:
        raise ConfigError(new.source, problems)
