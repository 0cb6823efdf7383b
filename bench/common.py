"""What the benchmarks share: starting servers pinned to one core, wrk on the other, cleanup.

Every process started here is stopped by its PID before the benchmark returns. Only loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from relay import config as config_module
from relay.db import links
from relay.db.links import LinkBook
from relay.keys import signatures
from relay.keys.crypto import SiteKey
from relay.keys.keystore import KeyStore
from relay.keys.signatures import Direction

SERVER_CORE, LOAD_CORE = "0", "1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@contextlib.contextmanager
def process(args: list[str], core: str | None = SERVER_CORE, port: int | None = None,
            log: Path | None = None, cwd: Path | None = None
            ) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``args`` (pinned to ``core``, in ``cwd``), wait for ``port``, and always stop it by
    PID."""
    if core is not None and shutil.which("taskset"):
        args = ["taskset", "-c", core, *args]
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=out, cwd=cwd)
    try:
        if port is not None:
            wait_for_port(port)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log:
            out.close()  # type: ignore[union-attr]


def relay_config(workdir: Path, port: int, partner_port: int, **delivery: Any) -> Path:
    document = {
        "listen": {"host": "127.0.0.1", "port": port},
        "database": str(workdir / "relay.sqlite3"),
        "ingest": {"max_body_bytes": 4 * 1024 * 1024},
        "delivery": {"retry_schedule": ["1s"], **delivery},
        "sites": [{"id": "a", "url": "http://127.0.0.1:9", "allow_http": True},
                  {"id": "b", "url": f"http://127.0.0.1:{partner_port}", "allow_http": True}],
        "links": [{"id": "a-b", "site": "a", "remote": "b", "direction": "push",
                   "outgoing": ["create", "edit", "delete", "password", "roles", "metadata"]}],
    }
    path = workdir / "relay.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def make_keys(config_path: Path) -> dict[str, SiteKey]:
    """A key per site; each site recorded as tested (the stand-ins answer no connection test)
    and every link started, so deliveries flow unless a benchmark pauses them."""
    config = config_module.load(config_path)
    store = KeyStore(config.database_path, config.master_key_path)
    try:
        keys = {site: store.generate(site) for site in config.sites}
        with LinkBook(config) as book:
            for site in config.sites:
                book.record_test(site, config.sites[site].url, str(store.key_id(site)), True,
                                 [{"name": "benchmark", "status": "ok", "detail": "stand-in"}])
            for link in config.links:
                book.start(link)
        return keys
    finally:
        store.close()


def pause_link(database: Path, link: str) -> None:
    with sqlite3.connect(database) as conn:
        links.pause(conn, link, "benchmark: deliveries held", time.time())


def one_event(n: int) -> dict[str, Any]:
    """A realistic ~1 KB event."""
    return {"id": f"bench-{n}", "occurred_at": time.time(), "actions": ["create", "roles",
                                                                        "metadata"],
            "user": {"id": n, "login": f"user{n}", "email": f"user{n}@example.test",
                     "first_name": "Benchmark", "last_name": f"User {n}",
                     "display_name": f"Benchmark User {n}", "nickname": f"user{n}",
                     "url": "https://example.test/~user", "registered": "2026-11-27 13:00:00",
                     "roles": ["customer"], "meta": {"billing_city": "Oslo",
                                                     "billing_address_1": "Karl Johans gate 1",
                                                     "bio": "x" * 500}}}


def wrk_script(workdir: Path, key: SiteKey, count: int, site: str = "a",
               per_request: int = 1) -> Path:
    """A wrk Lua script cycling through ``count`` pre-signed, distinct requests."""
    lines = []
    for n in range(1, count + 1):
        events = [one_event(n * per_request + i) for i in range(per_request)]
        body = json.dumps(signatures.envelope("events", site, events=events),
                          separators=(",", ":"))
        h = signatures.headers(key, body.encode(), Direction.TO_RELAY, f"msg_bench_{n}")
        # JSON bodies hold no tab or newline, so a tab-separated line carries one request.
        lines.append("\t".join([h["webhook-id"], h["webhook-timestamp"],
                                h["webhook-signature"], body]))
    data = workdir / f"requests-{per_request}.tsv"
    data.write_text("\n".join(lines) + "\n")
    script = workdir / f"ingest-{per_request}.lua"
    script.write_text(f"""
local requests = {{}}
local i = 0
function init(args)
  for line in io.lines("{data}") do
    local id, ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
    requests[#requests + 1] = wrk.format("POST", "/v1/sites/{site}/events", {{
      ["webhook-id"] = id, ["webhook-timestamp"] = ts, ["webhook-signature"] = sig,
      ["content-type"] = "application/json", ["userrelay-protocol"] = "2"}}, body)
  end
end
function request()
  i = i % #requests + 1
  return requests[i]
end
""")
    return script


def run_wrk(port: int, script: Path | None, seconds: int, connections: int = 64,
            path: str = "/") -> dict[str, float]:
    """Requests/s and p99 latency (ms) from wrk on the load core; non-2xx answers counted."""
    args = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
            "--latency"]
    if script is not None:
        args += ["-s", str(script)]
    args.append(f"http://127.0.0.1:{port}{path}")
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p99 is not None, out
    p99_ms = float(p99.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rate, "p99_ms": p99_ms, "non_2xx": float(errors.group(1)) if errors else 0.0}


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="userrelay-bench-"))


def python() -> list[str]:
    return [sys.executable]


def rss_peak_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else float("nan")


def env_has(tool: str) -> bool:
    return shutil.which(tool) is not None and os.access(shutil.which(tool) or "", os.X_OK)


def partner(workdir: Path, port: int, key: SiteKey) -> contextlib.AbstractContextManager[Any]:
    """The fast partner site, on the load core."""
    keyfile = workdir / "partner.key"
    keyfile.write_text(key.secret)
    keyfile.chmod(0o600)
    return process([*python(), "-m", "bench.partner_server", str(port), str(keyfile)],
                   core=LOAD_CORE, port=port)


def partner_count(port: int) -> int:
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/count", timeout=10) as resp:
        return int(json.loads(resp.read())["events"])


def fill(database: Path, config_path: Path, first: int, last: int, chunk: int = 1000) -> None:
    """Queue events ``first``..``last`` from site a through the relay's own ingest code."""
    from relay.db import queue
    from relay.db.store import connect_sync
    from relay.model.events import parse_batch
    from relay.model.routing import Router
    routes = Router(config_module.load(config_path)).routes_from("a")
    conn = connect_sync(database)
    conn.execute("PRAGMA synchronous=NORMAL")  # filling is set-up, not what is measured
    try:
        for start in range(first, last + 1, chunk):
            numbers = range(start, min(last, start + chunk - 1) + 1)
            events = parse_batch(json.dumps({"events": [one_event(n) for n in numbers]}).encode())
            conn.execute("BEGIN IMMEDIATE")
            for e in events:
                queue.accept(conn, "a", f"fill-{e.id}", [e], routes, time.time())
            conn.execute("COMMIT")
    finally:
        conn.close()


def unpause_link(database: Path, link: str) -> None:
    """Resume a link ``make_keys`` started (its sites are tested) before the relay starts."""
    with sqlite3.connect(database) as conn:
        conn.execute("UPDATE link_states SET paused = 0, reason = NULL WHERE link = ?", (link,))


def pending(database: Path) -> int:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM deliveries WHERE state IN "
                                "('waiting', 'ready', 'leased')").fetchone()[0])
