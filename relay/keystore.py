"""Site keys at rest: sealed in the ``site_keys`` table, opened on demand, cached in memory.

A key generated again (by the CLI, in another process) must replace the old one at once. Every
change of a key therefore also replaces a small marker file beside the database; a request
costs one ``stat`` of it, and the cache is dropped whenever it changed. (Reading the table on
every request costs ten times more under load: each read takes WAL locks.)
"""

from __future__ import annotations

import os
import secrets
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
        self._marker = database.with_name(database.name + ".keys-changed")
        if not self._marker.exists():
            self._changed()
        self._seen: tuple[int, int, int] | None = None
        self._cache: dict[str, SiteKey | None] = {}

    def close(self) -> None:
        self._conn.close()

    def get(self, site: str) -> SiteKey | None:
        try:
            st = os.stat(self._marker)
            seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            seen = None
        if seen != self._seen or seen is None:
            self._cache.clear()
            self._seen = seen
        if site not in self._cache:
            row = self._conn.execute("SELECT sealed FROM site_keys WHERE site = ?",
                                     (site,)).fetchone()
            self._cache[site] = None if row is None else self._master.open(bytes(row[0]), site)
        return self._cache[site]

    def generate(self, site: str) -> SiteKey:
        """Make a new key for ``site``; the old one stops working at once."""
        key = SiteKey.generate()
        self._write("INSERT INTO site_keys (site, sealed, created_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (site) DO UPDATE SET sealed = excluded.sealed, "
                    "created_at = excluded.created_at",
                    (site, self._master.seal(key), time.time()), site)
        return key

    def revoke(self, site: str) -> None:
        """Remove ``site``'s key: nothing it signs is accepted until a new one is generated."""
        self._write("DELETE FROM site_keys WHERE site = ?", (site,), site)

    def _write(self, sql: str, params: tuple[object, ...], site: str) -> None:
        try:
            self._conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise KeyStoreError(f"cannot store the key of site {site!r}: {exc}") from None
        self._changed()

    def _changed(self) -> None:
        temporary = self._marker.with_suffix(f".{secrets.token_hex(4)}")
        temporary.write_text(secrets.token_hex(8))
        os.replace(temporary, self._marker)  # a new inode: every reader sees the change
