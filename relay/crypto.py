"""Site keys: how they are made, and how they are sealed at rest under the master key.

A site key is a Standard Webhooks secret, ``whsec_`` + base64 of 32 random bytes. The relay
stores it sealed with PyNaCl's SecretBox under a master key kept in a file of mode 0600.
This module never logs and never puts a key into an exception message.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import nacl.exceptions
import nacl.secret
import nacl.utils

from relay.constants import KEY_BYTES, KEY_PREFIX
from relay.errors import KeyStoreError


class SiteKey:
    """A site's secret; prints as ``whsec_**********`` so it cannot leak through a log line."""

    __slots__ = ("_secret", "hmac_key")

    def __init__(self, secret: str) -> None:
        if not secret.startswith(KEY_PREFIX):
            raise ValueError(f"a site key starts with {KEY_PREFIX!r}")
        self._secret = secret
        #: The HMAC key: the decoded bytes after the prefix.
        self.hmac_key = base64.b64decode(secret[len(KEY_PREFIX):])

    @classmethod
    def generate(cls) -> SiteKey:
        raw = nacl.utils.random(KEY_BYTES)
        return cls(KEY_PREFIX + base64.b64encode(raw).decode("ascii"))

    @property
    def secret(self) -> str:
        """The whole ``whsec_`` string, to show once to the person who generated it."""
        return self._secret

    def __repr__(self) -> str:
        return f"{KEY_PREFIX}**********"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SiteKey) and other._secret == self._secret

    def __hash__(self) -> int:
        return hash(self._secret)


class MasterKey:
    """The SecretBox that seals site keys; loaded from, or created in, a 0600 file."""

    def __init__(self, key: bytes) -> None:
        self._box = nacl.secret.SecretBox(key)

    @classmethod
    def load_or_create(cls, path: Path) -> MasterKey:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            key = nacl.utils.random(nacl.secret.SecretBox.KEY_SIZE)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process created it first: read theirs
            else:
                with os.fdopen(fd, "wb") as f:
                    f.write(base64.b64encode(key) + b"\n")
                    f.flush()
                    os.fsync(f.fileno())
        try:
            key = base64.b64decode(path.read_bytes().strip(), validate=True)
        except (OSError, ValueError) as exc:
            raise KeyStoreError(f"cannot read the master key file {path}: {exc}") from None
        if len(key) != nacl.secret.SecretBox.KEY_SIZE:
            raise KeyStoreError(f"the master key file {path} does not hold a "
                                f"{nacl.secret.SecretBox.KEY_SIZE}-byte key")
        return cls(key)

    def seal(self, key: SiteKey) -> bytes:
        return bytes(self._box.encrypt(key.secret.encode("ascii")))

    def open(self, sealed: bytes, site: str) -> SiteKey:
        try:
            return SiteKey(self._box.decrypt(sealed).decode("ascii"))
        except nacl.exceptions.CryptoError:
            raise KeyStoreError(f"the key of site {site!r} cannot be opened with this master "
                                "key; was the master key file replaced?") from None
