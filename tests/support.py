"""The relay under test and what the suite records of it: events as plugins send them, site
keys and started links, the relay in process (``Relay``) and as a child process
(``RelayProcess``), signed posts to it, its admin API and CLI, and the session's record of
secrets and output (checked for leaks by tests/conftest.py).

Relay configurations are tests/relay_settings.py's, the partner site stand-in tests/partner.py's.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from relay.config import Config
from relay.db.links import LinkBook
from relay.keys import signatures
from relay.keys.crypto import SiteKey
from relay.keys.keystore import KeyStore
from relay.keys.signatures import Direction
from tests.partner import Partner as Partner  # bench/crash.py imports it from here


def event(event_id: str, user_id: int, actions: list[str], email: str | None = None,
          **user: Any) -> dict[str, Any]:
    """An event as a plugin reports it (docs/protocol.md)."""
    body: dict[str, Any] = {"id": f"user-{user_id}", "login": f"user{user_id}",
                            "email": email or f"user{user_id}@example.test",
                            "first_name": "", "last_name": "", "display_name": f"User {user_id}"}
    body["id"] = user_id
    if "roles" in actions:
        body["roles"] = ["subscriber"]
    if "password" in actions:
        body["password_hash"] = "$P$Bexamplehashexamplehashexampl"
    body.update(user)
    if "password_hash" in body:
        secret(body["password_hash"])
    return {"id": event_id, "occurred_at": time.time(), "actions": actions, "user": body}




@dataclass
class Relay:
    config: Config
    client: TestClient[Any, Any]
    keys: dict[str, SiteKey]

    @property
    def url(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    async def post(self, site_id: str, events: list[dict[str, Any]],
                   webhook_id: str | None = None, key: SiteKey | None = None,
                   timestamp: float | None = None) -> tuple[int, Any]:
        body = json.dumps(signatures.envelope("events", site_id, events=events)).encode()
        headers = signatures.headers(key or self.keys[site_id], body, Direction.TO_RELAY,
                                     webhook_id, timestamp)
        resp = await self.client.post(f"/v1/sites/{site_id}/events", data=body, headers=headers)
        return resp.status, await resp.json()

    def db(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        import sqlite3
        with sqlite3.connect(self.config.database_path) as conn:
            return conn.execute(sql, params).fetchall()


def generate_keys(config: Config, start_links: bool = True) -> dict[str, SiteKey]:
    """A key for every site; then, unless ``start_links`` is false, every site marked tested
    and every link started, as an admin would once the sites pass their connection tests."""
    store = KeyStore(config.database_path, config.master_key_path)
    try:
        keys = {site_id: secret_key(store.generate(site_id)) for site_id in config.sites}
        if start_links:
            for site_id in config.sites:
                mark_tested(config, store, site_id)
            with LinkBook(config) as book:
                for link in config.links:
                    book.start(link)
        return keys
    finally:
        store.close()


def mark_tested(config: Config, store: KeyStore, site_id: str) -> None:
    """Record that ``site_id`` passed a connection test with its current URL and key (for
    stand-ins that do not answer one, such as a site that only ever sends)."""
    key_id = store.key_id(site_id)
    assert key_id is not None, f"site {site_id!r} has no key"
    with LinkBook(config) as book:
        book.record_test(site_id, config.sites[site_id].url, key_id, True,
                         [{"name": "stand-in", "status": "ok", "detail": "marked tested"}])


class RelayProcess:
    """``userrelay serve`` as a real child process, its JSON log lines collected."""

    def __init__(self, config_path: Path, file_limit: int | None = None) -> None:
        self.config_path = config_path
        self.file_limit = file_limit  # RLIMIT_NOFILE of the process, as LimitNOFILE= sets it
        self.process: asyncio.subprocess.Process | None = None
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.port = 0
        self._reader: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 20) -> None:
        import sys
        limit = self.file_limit

        def limit_files() -> None:
            if limit is not None:
                import resource
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "relay", "serve", "--config", str(self.config_path),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, preexec_fn=limit_files)
        started = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read(started))
        self.port = await asyncio.wait_for(started, timeout)

    async def _read(self, started: asyncio.Future[int]) -> None:
        assert self.process is not None and self.process.stderr is not None
        async for raw in self.process.stderr:
            text = raw.decode(errors="replace")
            self.raw.append(text)
            record("relay-process", text)
            try:
                line = json.loads(text)
            except ValueError:
                continue
            self.lines.append(line)
            if line.get("event") == "relay_started" and not started.done():
                started.set_result(int(line["port"]))
        if not started.done():
            started.set_exception(AssertionError("the relay exited before it started:\n"
                                                 + "".join(self.raw)))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_mib(self) -> float:
        """The process's resident memory now."""
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines()
                        if line.startswith("VmRSS:"))) / 1024

    async def logged(self, event: str, timeout: float = 10) -> dict[str, Any]:
        """The first log line about ``event``, waiting for it to be written."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if line.get("event") == event:
                    return line
            await asyncio.sleep(0.02)
        raise AssertionError(f"the relay logged no {event!r} within {timeout}s")

    async def kill(self) -> None:
        """Stop it uncleanly, as a crash or power cut would."""
        assert self.process is not None
        self.process.kill()
        await self.process.wait()
        if self._reader:
            await self._reader

    async def terminate(self, timeout: float = 30) -> int:
        assert self.process is not None
        self.process.terminate()
        code = await asyncio.wait_for(self.process.wait(), timeout)
        if self._reader:
            await self._reader
        return code


def write_config(path: Path, config: dict[str, Any]) -> Path:
    import yaml
    path.write_text(yaml.safe_dump(config))
    return path


async def post_signed(url: str, site_id: str, key: SiteKey, events: list[dict[str, Any]],
                      webhook_id: str | None = None) -> tuple[int, Any]:
    import aiohttp
    body = json.dumps(signatures.envelope("events", site_id, events=events)).encode()
    async with aiohttp.ClientSession() as session, session.post(
            f"{url}/v1/sites/{site_id}/events", data=body,
            headers=signatures.headers(key, body, Direction.TO_RELAY, webhook_id)) as resp:
        return resp.status, await resp.json()


async def until(predicate: Any, timeout: float = 10) -> None:
    """Wait for a condition on the relay's database (polled: it changes in another thread)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


# --- secrets and output ---------------------------------------------------------------------
# Every key, admin token and password hash the suite makes is registered here; everything the
# relay logs (in this process and in relay processes) and every status, admin API and CLI
# output the tests record lands in one directory per session. At the end of the session,
# tests/conftest.py fails the run if any secret appears in any of it.

#: The secrets made so far in this session.
SECRETS: set[str] = set()
#: The session's output directory (set by tests/conftest.py; None outside pytest).
OUTPUT_DIR: Path | None = None


def secret(value: str) -> str:
    """Register ``value`` as a secret that no output may contain; returns it."""
    SECRETS.add(value)
    return value


def secret_key(key: SiteKey) -> SiteKey:
    """Register a site key: the whole ``whsec_`` string and the base64 of its bytes."""
    secret(key.secret)
    secret(key.secret.removeprefix("whsec_"))
    return key


def record(name: str, text: str) -> str:
    """Append ``text`` (output of the relay, a command or the admin API) to the session's
    ``name``.log, which is checked for secrets at the end of the session; returns ``text``."""
    if OUTPUT_DIR is not None:
        with open(OUTPUT_DIR / f"{name}.log", "a", encoding="utf-8") as out:
            out.write(text if text.endswith("\n") else text + "\n")
    return text


def output_file(name: str) -> Path | None:
    """A file for a relay process to write its log to, in the session's output directory."""
    return None if OUTPUT_DIR is None else OUTPUT_DIR / f"{name}.log"


def leaks(folder: Path, secrets: set[str]) -> list[str]:
    """Where any of ``secrets`` appears in the files under ``folder``: one line per finding,
    naming the file, the line and the secret by its first characters only."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace")
                                      .splitlines(), 1):
            for value in secrets:
                if value in line:
                    found.append(f"{path.name}:{number}: a secret starting {value[:8]!r}…")
    return found


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``userrelay ARGS`` as a child process; its output is recorded (see ``record``)."""
    result = subprocess.run([sys.executable, "-m", "relay", *args], capture_output=True,
                            text=True, check=False, timeout=60)
    record("cli", f"$ userrelay {' '.join(args)}\n{result.stdout}{result.stderr}")
    if check:
        assert 0 == result.returncode, result.stderr
    return result


@dataclass
class AdminClient:
    """The admin API of a running relay, called with ``token`` unless told otherwise."""

    url: str
    token: str

    async def call(self, method: str, path: str, body: Any = None,
                   params: dict[str, str] | None = None,
                   authorization: str | None = "bearer", recorded: bool = True
                   ) -> tuple[int, Any]:
        """``authorization``: "bearer" sends the token; None sends no header; any other
        string is sent as the header as it is. ``recorded``: false only for the one answer
        meant to carry a secret (a new key). Answers (status, JSON or text)."""
        import aiohttp
        headers = {}
        if authorization == "bearer":
            headers["Authorization"] = f"Bearer {self.token}"
        elif authorization is not None:
            headers["Authorization"] = authorization
        async with aiohttp.ClientSession() as session, session.request(
                method, f"{self.url}{path}", json=body, params=params,
                headers=headers) as resp:
            text = await resp.text()
        if recorded:
            record("admin-api", f"{method} {path} -> {resp.status}\n{text}")
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


