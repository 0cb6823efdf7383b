"""Site keys at rest: sealed in the ``site_keys`` table, opened on demand.

Every request is authenticated against the key read from the database at that moment, so a
key generated again (by the CLI or another process) replaces the old one at once. The lookup
is a primary-key read on a connection of its own, a few microseconds, and never waits on the
writer (WAL readers do not block).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from relay.crypto import MasterKey, SiteKey
from relay.errors import KeyStoreError
from relay.store import connect_sync


class KeyStore:
    def __init__(self, database: Path, master_key: Path) -> None:
        self._conn = connect_sync(database)
        self._master = MasterKey.load_or_create(master_key)
        self._opened: dict[bytes, SiteKey] = {}

    def close(self) -> None:
        self._conn.close()

    def get(self, site: str) -> SiteKey | None:
        row = self._conn.execute("SELECT sealed FROM site_keys WHERE site = ?", (site,)).fetchone()
        if row is None:
            return None
        sealed = bytes(row[0])
        key = self._opened.get(sealed)
        if key is None:
            key = self._master.open(sealed, site)
            self._opened = {sealed: key, **self._opened} if len(self._opened) < 64 else {sealed: key}
        return key

    def require(self, site: str) -> SiteKey:
        key = self.get(site)
        if key is None:
            raise KeyStoreError(f"site {site!r} has no key yet; run "
                                f"'userrelay keys generate {site}' and paste it into the site")
        return key

    def generate(self, site: str) -> SiteKey:
        """Make a new key for ``site``; the old one stops working at once."""
        key = SiteKey.generate()
        sealed = self._master.seal(key)
        try:
            self._conn.execute(
                "INSERT INTO site_keys (site, sealed, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (site) DO UPDATE SET sealed = excluded.sealed, "
                "created_at = excluded.created_at",
                (site, sealed, time.time()),
            )
        except sqlite3.Error as exc:
            raise KeyStoreError(f"cannot store the key of site {site!r}: {exc}") from None
        return key
