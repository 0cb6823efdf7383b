"""The one door to a site's plugin: every call the relay makes to a companion plugin.

It owns the plugin's paths, the signing (protocol 2: the relay → site secret, a body naming its
operation and site), the certificates trusted for the site (the system's store, or the site's
``ca_file``; verification is never turned off), the cap on an answer's size and how a failed
call is described. What an
answer *means* stays with the caller (delivery, initial sync, reconciliation, connection test),
each of which knows its own operation.
"""

from __future__ import annotations

import functools
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from relay.constants import PLUGIN_BASE, PROTOCOL
from relay.keys import signatures
from relay.keys.crypto import SiteKey
from relay.keys.signatures import PROTOCOL_HEADER, Direction

#: The operations a plugin takes, each a signed POST to its own route.
OPERATIONS = ("events", "ping", "users", "digests", "snapshots", "nudge")
#: The most of an answer that is read; a larger one is cut (and then fails to parse).
MAX_ANSWER_BYTES = 4 * 1024 * 1024


def plugin_url(site_url: str, operation: str) -> str:
    """The URL of one of a plugin's routes on a site."""
    return f"{site_url.rstrip('/')}{PLUGIN_BASE}/{operation}"


@dataclass(frozen=True)
class Answer:
    """A plugin's answer: its status, body (cut at the call's ``max_answer``) and headers."""

    url: str
    status: int
    body: bytes
    headers: Mapping[str, str]

    @property
    def speaks_our_protocol(self) -> bool:
        return self.headers.get(PROTOCOL_HEADER) == str(PROTOCOL)

    def excerpt(self, size: int = 200) -> str:
        text = self.body[:size].decode("utf-8", "replace").strip()
        return f": {text}" if text else ""

    def json(self) -> Any:
        """The body as JSON (``ValueError`` when it is not)."""
        return json.loads(self.body)

    def protocol_hint(self) -> str:
        """For a refusal: a hint when the answer does not come from a protocol-2 plugin."""
        if self.speaks_our_protocol:
            return ""
        return (f" (the answer does not say it speaks UserRelay protocol {PROTOCOL}: if the "
                "plugin on the site is an older version, update it)")


def tls_context(ca_file: Path | None) -> ssl.SSLContext | bool:
    """What verifies a site's certificate: True (aiohttp's default, the system's store), or a
    context trusting only ``ca_file``'s authorities (rebuilt when the file changes)."""
    if ca_file is None:
        return True
    try:
        changed = ca_file.stat().st_mtime_ns
    except OSError:
        changed = 0  # then loading fails and names the file, as it should
    return _context_for(str(ca_file), changed)


@functools.lru_cache(maxsize=64)
def _context_for(ca_file: str, changed: int) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


async def read_whole(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body of an answer, refusing one over ``limit`` bytes
    (``StreamReader.read(n)`` would return only what has arrived so far, up to n)."""
    chunks, size = [], 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise aiohttp.ClientPayloadError(f"the answer is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class PluginClient:
    """Signed calls to one site's plugin, through a shared ``aiohttp`` session."""

    def __init__(self, site_id: str, site_url: str, key: SiteKey,
                 session: aiohttp.ClientSession, timeout: float,
                 ca_file: Path | None = None) -> None:
        self.site_id, self._site_url = site_id, site_url
        self._key, self._session = key, session
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._ca_file = ca_file

    def url(self, operation: str) -> str:
        return plugin_url(self._site_url, operation)

    def body(self, operation: str, **params: Any) -> bytes:
        """The signed body of ``operation`` (its envelope and parameters)."""
        return json.dumps(signatures.envelope(operation, self.site_id, **params),
                          separators=(",", ":")).encode()

    async def call(self, operation: str, timeout: float | None = None,
                   max_answer: int = MAX_ANSWER_BYTES, **params: Any) -> Answer:
        """POST ``operation`` with ``params``; the answer, whatever its status.

        Raises ``aiohttp.ClientError``, ``TimeoutError`` or ``OSError`` when no answer came:
        ``unreachable`` words them.
        """
        if operation not in OPERATIONS:
            raise ValueError(f"unknown plugin operation {operation!r}")
        return await self.post(operation, self.body(operation, **params), timeout, max_answer)

    async def post(self, operation: str, body: bytes, timeout: float | None = None,
                   max_answer: int = MAX_ANSWER_BYTES) -> Answer:
        """POST a body made by ``body`` (a caller that must know its size first)."""
        url = self.url(operation)
        headers = signatures.headers(self._key, body, Direction.TO_SITE)
        async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False,
                ssl=tls_context(self._ca_file),
                timeout=self._timeout if timeout is None else aiohttp.ClientTimeout(
                    total=timeout)) as resp:
            return Answer(url, resp.status, await read_whole(resp, max_answer), resp.headers)

    def unreachable(self, operation: str, exc: BaseException) -> str:
        """Why a call got no answer, in one line naming the URL."""
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return f"cannot reach {self.url(operation)}: {error}"
