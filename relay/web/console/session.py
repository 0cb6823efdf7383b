"""The console's session cookie and CSRF tokens, both derived from the admin token.

Signing in with the admin token sets a cookie ``expiry.nonce.mac`` (HttpOnly, SameSite=Strict,
path ``/console/``), MAC'd with a key derived from the admin token: nothing is stored, so a
session outlives a restart or reload of the relay, and a new admin token ends every session.
The CSRF token of a session is a MAC of its nonce; every form and every htmx request carries
it, and a POST also needs a same-origin ``Origin`` (when the browser sends one).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

COOKIE = "userrelay_console"
#: How long a session lasts (seconds).
LIFETIME = 12 * 3600
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"


class Sessions:
    def __init__(self, admin_token: str) -> None:
        self._key = hmac.digest(admin_token.encode(), b"userrelay console session v1",
                                hashlib.sha256)
        self._token = admin_token.encode()

    def token_matches(self, presented: str) -> bool:
        return hmac.compare_digest(presented.strip().encode("utf-8", "surrogateescape"),
                                   self._token)

    def new(self, now: float | None = None) -> str:
        expires = int((now or time.time()) + LIFETIME)
        nonce = secrets.token_urlsafe(18)
        return f"{expires}.{nonce}.{self._mac(f'{expires}.{nonce}')}"

    def nonce(self, cookie: str | None, now: float | None = None) -> str | None:
        """The session's nonce when ``cookie`` is a valid, unexpired session; else None."""
        if not cookie or cookie.count(".") != 2:
            return None
        expires, nonce, mac = cookie.split(".")
        if not hmac.compare_digest(mac, self._mac(f"{expires}.{nonce}")):
            return None
        if not expires.isdigit() or int(expires) < (now or time.time()):
            return None
        return nonce

    def csrf(self, nonce: str) -> str:
        return self._mac(f"csrf.{nonce}")

    def csrf_matches(self, nonce: str, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(str(presented), self.csrf(nonce))

    def _mac(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()
