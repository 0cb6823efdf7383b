"""Site keys at rest: sealed in the ``site_keys`` table, opened on demand, cached in memory.

A key generated again (by the CLI, in another process) must replace the old one at once. Every
change of a key therefore also replaces a small marker file beside the database; a request
costs one ``stat`` of it, and the cache is dropped whenever it changed. (Reading the table on
every request costs ten times more under load: each read takes WAL locks.)

A rotation may keep the previous key valid for a grace period: ``accepted`` then lists both,
so a site still signing with its old key is not refused while its admin pastes the new one.
Deliveries are always signed with the current key (``get``). Each stored key has an id
(``key_id``: a hash of its sealed form, never of the key) so a connection test can tell
whether the key it tested is still the site's key.

    store = KeyStore(config.database_path, config.master_key_path)
    key = store.rotate("shop", grace=30 * 60)   # the old key is accepted for 30 more minutes
    store.end_grace("shop")                     # ... or no longer, from now

The master key is never made behind the operator's back: opening a store whose database holds
keys without their master key fails, naming the file. The first key generated while the
database holds none makes the master key (``created_master`` says where), as does
``userrelay init``.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from relay.db.links import key_id
from relay.db.store import connect_sync
from relay.errors import KeyStoreError
from relay.keys.crypto import MasterKey, MasterKeyMissing, SiteKey


class MasterKeyLost(KeyStoreError):
    """The database holds site keys, but their master key is missing or is another key."""


@dataclass(frozen=True)
class _Entry:
    current: SiteKey
    key_id: str
    previous: SiteKey | None
    previous_until: float | None


class KeyStore:
    def __init__(self, database: Path, master_key: Path, config_flag: str = "",
                 require_master: bool = True) -> None:
        """``config_flag``: `` --config FILE`` when a command was given one, for the hints.
        ``require_master``: fail at once when stored keys lack their master key (not for
        ``new_master_key``, which replaces it)."""
        self._conn = connect_sync(database)
        self._database = database
        self._master_path = master_key
        self._config_flag = config_flag
        self._master: MasterKey | None = None
        #: The master key file made by this store (the first key generated), if any.
        self.created_master: Path | None = None
        self._marker = database.with_name(database.name + ".keys-changed")
        self._seen: tuple[int, int, int] | None = None
        self._cache: dict[str, _Entry | None] = {}
        self._problems: tuple[object, dict[str, str]] | None = None
        try:
            if require_master:
                self._master_key()
            if not self._marker.exists():
                self._changed()
        except BaseException:
            self._conn.close()
            raise

    def stored_sites(self) -> list[str]:
        """The sites with a key in the database."""
        return [row[0] for row in self._conn.execute("SELECT site FROM site_keys ORDER BY site")]

    def _master_key(self, create: bool = False) -> MasterKey | None:
        """The master key; None while neither it nor any site key exists (unless ``create``)."""
        if self._master is not None:
            return self._master
        try:
            self._master = MasterKey.load(self._master_path)
        except MasterKeyMissing:
            stored = self.stored_sites()
            if stored:
                raise self.lost(f"the master key file {self._master_path} does not exist, but "
                                f"the database {self._database} holds the keys of "
                                f"{_sites(stored)} sealed with it") from None
            if not create:
                return None
            self._master = MasterKey.create(self._master_path)
            self.created_master = self._master_path
        return self._master

    def lost(self, what: str) -> MasterKeyLost:
        return MasterKeyLost(
            f"{what}. Restore that file from your backup; or, if it is lost for good, make a "
            f"new master key and then a new key for every site: userrelay init "
            f"--new-master-key{self._config_flag}")

    def problems(self) -> dict[str, str]:
        """Per site whose stored key cannot be opened, why (for ``/readyz``); recomputed only
        when a key changed."""
        seen = (self.version(), self._master is None)
        if self._problems is not None and self._problems[0] == seen:
            return self._problems[1]
        found: dict[str, str] = {}
        try:
            rows = self._conn.execute("SELECT site, sealed, previous_sealed FROM site_keys"
                                      ).fetchall()
            for site, sealed, previous in rows:
                try:
                    master = self._master_key()
                    assert master is not None  # rows exist, so it was loaded or raised
                    master.open(bytes(sealed), site)
                    if previous is not None:
                        master.open(bytes(previous), site)
                except KeyStoreError as exc:
                    found[site] = str(exc)
        except sqlite3.Error as exc:
            found["*"] = f"the keys cannot be read: {exc}"
        self._problems = (seen, found)
        return found

    def check(self) -> None:
        """Raise ``MasterKeyLost`` when any stored key cannot be opened with the master key."""
        unreadable = self.problems()
        if unreadable:
            raise self.lost(f"the master key file {self._master_path} does not open the keys "
                            f"of {_sites(list(unreadable))} in {self._database}: it is not the "
                            "key they were sealed with")

    def new_master_key(self) -> tuple[list[str], Path | None]:
        """A new master key, for when the old one is lost: every stored site key is removed
        (none could be opened again). Returns the sites that had one and where the old file
        was moved (None if there was none)."""
        stored = self.stored_sites()
        moved: Path | None = None
        if self._master_path.exists():
            moved = self._master_path.with_name(
                f"{self._master_path.name}.replaced-{time.strftime('%Y%m%dT%H%M%S')}")
            os.replace(self._master_path, moved)
        try:
            self._conn.execute("DELETE FROM site_keys")
        except sqlite3.Error as exc:
            raise KeyStoreError(f"cannot remove the old site keys: {exc}") from None
        self._master = MasterKey.create(self._master_path)
        self.created_master = self._master_path
        self._changed()
        return stored, moved

    def close(self) -> None:
        self._conn.close()

    def get(self, site: str) -> SiteKey | None:
        """The site's current key: what deliveries are signed with."""
        entry = self._entry(site)
        return None if entry is None else entry.current

    def accepted(self, site: str, now: float | None = None) -> list[SiteKey]:
        """The keys a request from ``site`` may be signed with: the current one, and the
        previous one while its grace lasts."""
        entry = self._entry(site)
        if entry is None:
            return []
        now = time.time() if now is None else now
        if entry.previous is not None and entry.previous_until is not None \
                and now < entry.previous_until:
            return [entry.current, entry.previous]
        return [entry.current]

    def key_id(self, site: str) -> str | None:
        """The id of the site's current key (None without one); it changes with every new key."""
        entry = self._entry(site)
        return None if entry is None else entry.key_id

    def grace_until(self, site: str, now: float | None = None) -> float | None:
        """Until when the previous key is still accepted, if it is now."""
        entry = self._entry(site)
        now = time.time() if now is None else now
        if entry is None or entry.previous_until is None or entry.previous_until <= now:
            return None
        return entry.previous_until

    def version(self) -> tuple[int, int, int] | None:
        """Changes whenever any key changes (in any process): one ``stat``."""
        try:
            st = os.stat(self._marker)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _entry(self, site: str) -> _Entry | None:
        seen = self.version()
        if seen != self._seen or seen is None:
            self._cache.clear()
            self._seen = seen
        if site not in self._cache:
            row = self._conn.execute("SELECT sealed, previous_sealed, previous_until "
                                     "FROM site_keys WHERE site = ?", (site,)).fetchone()
            if row is None:
                self._cache[site] = None
            else:
                master = self._master_key()
                assert master is not None  # a key is stored, so it was loaded or raised
                sealed = bytes(row[0])
                previous = None if row[1] is None else master.open(bytes(row[1]), site)
                self._cache[site] = _Entry(master.open(sealed, site), key_id(sealed),
                                           previous, row[2])
        return self._cache[site]

    def generate(self, site: str) -> SiteKey:
        """Make a new key for ``site``; the old one stops working at once."""
        return self.rotate(site)

    def rotate(self, site: str, grace: float = 0.0, now: float | None = None) -> SiteKey:
        """Make a new key for ``site``. The old one stops working at once, or, with ``grace``
        seconds, is still accepted from the site until then (never used to sign)."""
        key = SiteKey.generate()
        now = time.time() if now is None else now
        master = self._master_key(create=True)
        assert master is not None
        others = {s: p for s, p in self.problems().items() if s != site}
        if others:
            raise self.lost(f"the master key file {self._master_path} does not open the keys "
                            f"of {_sites(list(others))} in {self._database}: it is not the "
                            "key they were sealed with")
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute("SELECT sealed FROM site_keys WHERE site = ?",
                                         (site,)).fetchone()
                previous = bytes(row[0]) if row is not None and grace > 0 else None
                self._conn.execute(
                    "INSERT INTO site_keys (site, sealed, created_at, previous_sealed, "
                    "previous_until) VALUES (?, ?, ?, ?, ?) ON CONFLICT (site) DO UPDATE SET "
                    "sealed = excluded.sealed, created_at = excluded.created_at, "
                    "previous_sealed = excluded.previous_sealed, "
                    "previous_until = excluded.previous_until",
                    (site, master.seal(key), now, previous,
                     now + grace if previous is not None else None))
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise KeyStoreError(f"cannot store the key of site {site!r}: {exc}") from None
        self._changed()
        return key

    def end_grace(self, site: str, at: float | None = None) -> None:
        """Stop accepting ``site``'s previous key at ``at`` (now by default)."""
        at = time.time() if at is None else at
        self._write("UPDATE site_keys SET previous_until = ? WHERE site = ? "
                    "AND previous_sealed IS NOT NULL", (at, site), site)

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


def _sites(sites: list[str]) -> str:
    return ("site " if len(sites) == 1 else "sites ") + ", ".join(repr(s) for s in sites)
