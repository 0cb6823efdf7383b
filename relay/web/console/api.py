"""The console's client of the admin API: the same requests a script would make, with the
admin token, to the listener the console itself is served on."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

#: Seconds one admin request may take (a connection test of a slow site takes up to ~30 s).
TIMEOUT = 90.0


@dataclass
class Answer:
    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def error(self) -> str:
        if isinstance(self.body, dict):
            return str(self.body.get("reason") or self.body.get("error") or self.body)
        return str(self.body)

    @property
    def field(self) -> str | None:
        return self.body.get("field") if isinstance(self.body, dict) else None


class AdminClient:
    def __init__(self, token: str) -> None:
        self._headers = {"Authorization": f"Bearer {token}"}
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _base(self, request: web.Request) -> str:
        # The address this request came in on: the admin listener (never the Host header).
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        host, port = sockname[:2] if sockname else ("127.0.0.1", 0)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    async def call(self, request: web.Request, method: str, path: str,
                   body: dict[str, Any] | None = None, query: dict[str, str] | None = None
                   ) -> Answer:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=TIMEOUT),
                connector=aiohttp.TCPConnector(force_close=True))
        data = None if body is None else json.dumps(body).encode()
        try:
            async with self._session.request(method, self._base(request) + path,
                                             data=data, params=query or None,
                                             headers=self._headers) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Answer(503, {"error": f"the relay did not answer ({exc.__class__.__name__}); "
                                         "it may be reloading: try again in a moment"})
        try:
            return Answer(status, json.loads(raw) if raw else None)
        except ValueError:
            return Answer(status, {"error": raw.decode(errors="replace")[:300]})

    async def get(self, request: web.Request, path: str, **query: str) -> Answer:
        return await self.call(request, "GET", path, None, query)

    async def post(self, request: web.Request, path: str, body: dict[str, Any] | None = None
                   ) -> Answer:
        return await self.call(request, "POST", path, body or {})
