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


class MasterKeyMissing(KeyStoreError):
    """The master key file does not exist (``path``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"the master key file {path} does not exist")


class SiteKey:
    """A site's secret; prints as ``whsec_**********`` so it cannot leak through a log line."""

    __slots__ = ("_secret", "derived", "hmac_key")

    def __init__(self, secret: str) -> None:
        if not secret.startswith(KEY_PREFIX):
            raise ValueError(f"a site key starts with {KEY_PREFIX!r}")
        self._secret = secret
        #: The HMAC key: the decoded bytes after the prefix.
        self.hmac_key = base64.b64decode(secret[len(KEY_PREFIX):])
        #: The per-direction secrets derived from it (relay/keys/signatures.py), computed once.
        self.derived: dict[str, bytes] = {}

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
    """The SecretBox that seals site keys, read from a file of mode 0600.

    It is never made behind the operator's back: ``load`` only reads, and says what is wrong
    with the file (missing, empty, a folder, not a key); ``create`` is an explicit step.
    """

    def __init__(self, key: bytes) -> None:
        self._box = nacl.secret.SecretBox(key)

    @classmethod
    def load(cls, path: Path) -> MasterKey:
        """The key in ``path``; ``KeyStoreError`` naming the file and the problem otherwise."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise MasterKeyMissing(path) from None
        except IsADirectoryError:
            raise KeyStoreError(f"the master key file {path} is a folder, not a key file "
                                "(master_key_file)") from None
        except OSError as exc:
            raise KeyStoreError(f"cannot read the master key file {path}: "
                                f"{exc.strerror or exc}") from None
        if not raw.strip():
            raise KeyStoreError(f"the master key file {path} is empty; restore it from your "
                                "backup") from None
        try:
            key = base64.b64decode(raw.strip(), validate=True)
        except ValueError:
            key = b""
        if len(key) != nacl.secret.SecretBox.KEY_SIZE:
            raise KeyStoreError(f"the master key file {path} does not hold a "
                                f"{nacl.secret.SecretBox.KEY_SIZE}-byte key (base64, one "
                                "line); restore it from your backup")
        return cls(key)

    @classmethod
    def create(cls, path: Path) -> MasterKey:
        """Make a new key in ``path`` (mode 0600); refuses to overwrite an existing file."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return cls.load(path)  # another process made it first: theirs is the key
        except OSError as exc:
            raise KeyStoreError(f"cannot create the master key file {path}: "
                                f"{exc.strerror or exc}") from None
        key = nacl.utils.random(nacl.secret.SecretBox.KEY_SIZE)
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64encode(key) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        return cls(key)

    def seal(self, key: SiteKey) -> bytes:
        return bytes(self._box.encrypt(key.secret.encode("ascii")))

    def open(self, sealed: bytes, site: str) -> SiteKey:
        try:
            return SiteKey(self._box.decrypt(sealed).decode("ascii"))
        except nacl.exceptions.CryptoError:
            raise KeyStoreError(f"the key of site {site!r} cannot be opened with this master "
                                "key; was the master key file replaced? Restore it from your "
                                "backup, or generate the site's key again") from None
