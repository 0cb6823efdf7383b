"""Shared fixtures: a relay on real SQLite files, and real HTTP servers standing in for sites.

And, for the whole session: no key, admin token or password hash in any output (see
``no_secret_in_any_output``).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import structlog
from aiohttp import web

from relay import logs
from relay.config import Config
from relay.web import admin
from relay.web.app import create_app
from relay.web.appkeys import ADMIN_URL
from tests import support
from tests.console_support import Console
from tests.partner import Partner, Responder
from tests.relay_settings import settings, site
from tests.support import Relay, RelayProcess, generate_keys


class _Tee:
    """Writes to a file and to the current stderr (which pytest captures, test by test)."""

    def __init__(self, file: IO[str]) -> None:
        self.file = file

    def write(self, text: str) -> int:
        self.file.write(text)
        sys.stderr.write(text)
        return len(text)

    def flush(self) -> None:
        self.file.flush()
        sys.stderr.flush()


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_output(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keys, admin tokens and password hashes never appear in logs, status output or errors.

    For the session, the relay's own logging (as ``userrelay serve`` sets it up, at debug
    level) also writes to a file in one output directory; relay processes' logs, and the status,
    admin API and CLI output the tests record, land there too (tests/support.py). At the end,
    any secret the tests made (registered as they are made) found there fails the run.
    """
    folder = tmp_path_factory.mktemp("output")
    support.OUTPUT_DIR = folder
    log_file = open(folder / "relay-in-process.log", "a", encoding="utf-8")  # noqa: SIM115
    with pytest.MonkeyPatch.context() as env:
        env.delenv(admin.TOKEN_ENV, raising=False)  # the suite makes its own tokens
        with contextlib.redirect_stderr(_Tee(log_file)):  # where logs.configure writes
            logs.configure("debug", json_lines=True)
        # Cached loggers would escape structlog.testing.capture_logs in later tests.
        structlog.configure(cache_logger_on_first_use=False)
        for chatty in ("aiosqlite", "asyncio"):  # a line per statement: not the relay's own
            logging.getLogger(chatty).setLevel(logging.INFO)
        yield
    log_file.flush()
    # Were the directory gone (cleaned up by another session), nothing would be found: fail.
    assert (folder / "relay-in-process.log").exists(), f"{folder} vanished during the session"
    found = support.leaks(folder, support.SECRETS)
    structlog.reset_defaults()
    logging.getLogger().handlers = []
    log_file.close()
    support.OUTPUT_DIR = None
    if found:
        pytest.fail(f"secrets in the output under {folder}:\n" + "\n".join(found[:20]),
                    pytrace=False)


@pytest.fixture
def admin_token() -> str:
    """A fresh admin API token (a secret: it must never appear in any output)."""
    return support.secret(secrets.token_urlsafe(32))


@pytest.fixture
async def partner_factory(aiohttp_server: Any) -> Callable[..., Awaitable[Partner]]:
    async def make(respond: Responder | None = None) -> Partner:
        partner = Partner(respond=respond)
        app = web.Application()
        app.router.add_post("/wp-json/userrelay/v1/events", partner.handle)
        app.router.add_post("/wp-json/userrelay/v1/ping", partner.ping)
        app.router.add_post("/wp-json/userrelay/v1/nudge", partner.nudge)
        partner.server = await aiohttp_server(app)
        return partner
    return make


@pytest.fixture
async def relay_factory(aiohttp_client: Any) -> Callable[..., Awaitable[Relay]]:
    """A relay on ``config``; its sites tested and links started unless ``start_links`` is
    false (then every link is a draft, as in a new installation)."""
    async def make(config: Config, start_links: bool = True) -> Relay:
        keys = generate_keys(config, start_links)
        client = await aiohttp_client(create_app(config))
        return Relay(config, client, keys)
    return make


@pytest.fixture
async def two_sites(partner_factory: Any, relay_factory: Any, tmp_path: Path) -> Any:
    """Site ``a`` pushes everything to site ``b`` (a partner server); returns (relay, b).
    The link a-b is active unless ``start_links`` is false (then both sites are untested)."""
    async def make(responder: Responder | None = None, ingest: dict[str, Any] | None = None,
                   start_links: bool = True, **delivery: Any) -> tuple[Relay, Partner]:
        b = await partner_factory(responder)
        config = settings(tmp_path, [site("a", "http://127.0.0.1:9"), site("b", b.url)],
                          [{"id": "a-b", "site": "a", "remote": "b", "direction": "push",
                            "outgoing": ["create", "edit", "delete", "password", "roles",
                                         "metadata"]}], ingest, **delivery)
        relay = await relay_factory(config, start_links)
        b.key, b.site_id, b.relay_url = relay.keys["b"], "b", relay.url
        return relay, b
    return make


@pytest.fixture
async def admin_relay(partner_factory: Any, relay_factory: Any, tmp_path: Path,
                      admin_token: str) -> Any:
    """Sites ``a`` and ``c`` push everything to site ``b`` (a partner server), and the admin
    API listens with ``admin_token`` (from a token file); returns (relay, b, admin client)."""
    async def make(responder: Responder | None = None, **delivery: Any
                   ) -> tuple[Relay, Partner, support.AdminClient]:
        b = await partner_factory(responder)
        token_file = tmp_path / "admin.token"
        token_file.write_text(admin_token + "\n")
        everything = ["create", "edit", "delete", "password", "roles", "metadata"]
        config = settings(tmp_path, [site("a", "http://127.0.0.1:9"), site("b", b.url),
                                     site("c", "http://127.0.0.1:9")],
                          [{"id": "a-b", "site": "a", "remote": "b", "direction": "push",
                            "outgoing": everything},
                           {"id": "c-b", "site": "c", "remote": "b", "direction": "push",
                            "outgoing": everything}],
                          admin={"token_file": str(token_file)}, **delivery)
        relay = await relay_factory(config)
        b.key, b.site_id, b.relay_url = relay.keys["b"], "b", relay.url
        return relay, b, support.AdminClient(relay.client.app[ADMIN_URL], admin_token)
    return make


@pytest.fixture
async def console_relay(tmp_path: Path, admin_token: str) -> Any:
    """A real ``userrelay serve`` with the admin API (and so the console) on a free port,
    its configuration file empty of sites; returns (process, console, config path)."""
    token_file = tmp_path / "admin.token"
    token_file.write_text(admin_token)
    token_file.chmod(0o600)
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        admin_port = s.getsockname()[1]
    path = tmp_path / "relay.yaml"
    path.write_text(
        "# the console's test relay\n"
        "listen: {host: 127.0.0.1, port: 0}\n"
        f"admin: {{host: 127.0.0.1, port: {admin_port}, token_file: {token_file}}}\n"
        f"database: {tmp_path / 'relay.sqlite3'}\n"
        "delivery: {retry_schedule: [0.05], jitter: 0, timeout: 5, lease: 10, "
        "shutdown_grace: 2}\n")
    process = RelayProcess(path)
    await process.start()
    await process.logged("admin_started")
    console = Console(f"http://127.0.0.1:{admin_port}")
    try:
        yield process, console, path
    finally:
        await console.close()
        if process.process is not None and process.process.returncode is None:
            await process.terminate()
