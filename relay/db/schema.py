"""The relay's tables, and bringing an older database up to them.

``SCHEMA_VERSION`` is stored in ``PRAGMA user_version``; ``prepare`` sets the pragmas, creates
what is missing and runs each migration once, in order, on every connection that opens the
file (the daemon's writer, the CLI, key reads).
"""

from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 5
SCHEMA = """
CREATE TABLE IF NOT EXISTS site_keys (
    site        TEXT PRIMARY KEY,
    sealed      BLOB NOT NULL,          -- SecretBox(whsec_ key) under the master key
    created_at  REAL NOT NULL,
    previous_sealed BLOB,               -- the key before a rotation with grace, still accepted
    previous_until  REAL                -- ... from the site until then
);
-- One row per accepted request: a repeated webhook-id gets this answer again.
CREATE TABLE IF NOT EXISTS receipts (
    site        TEXT NOT NULL,
    webhook_id  TEXT NOT NULL,
    status      INTEGER NOT NULL,
    answer      TEXT NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (site, webhook_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS receipts_age ON receipts (received_at);
-- Every event id seen from a site, so an event re-sent in another request counts once.
CREATE TABLE IF NOT EXISTS seen_events (
    site        TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    received_at REAL NOT NULL,
    outcome     TEXT NOT NULL,          -- routed | unrouted | echo
    PRIMARY KEY (site, event_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_events_age ON seen_events (received_at);
-- One relay-wide identity per person; accounts map (site, that site's user id) to it.
CREATE TABLE IF NOT EXISTS persons (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    site        TEXT NOT NULL,
    user_id     INTEGER NOT NULL,
    person      INTEGER NOT NULL REFERENCES persons (id),
    email       TEXT,
    login       TEXT,
    PRIMARY KEY (site, user_id)
) WITHOUT ROWID;
-- First contact: a partner's account by email or login. Covering (person included), or SQLite
-- prefers the primary key's (site) prefix and walks every account of the site.
CREATE INDEX IF NOT EXISTS accounts_by_email ON accounts (site, email, person);
CREATE INDEX IF NOT EXISTS accounts_by_login ON accounts (site, login, person);
CREATE INDEX IF NOT EXISTS accounts_person ON accounts (person, site);
-- One row per (event, target site). Never deleted when claimed: a lease marks it in flight.
CREATE TABLE IF NOT EXISTS deliveries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    source      TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    target      TEXT NOT NULL,
    link        TEXT NOT NULL,
    person      INTEGER NOT NULL,
    kind        TEXT NOT NULL,          -- create | update | delete
    actions     TEXT NOT NULL,          -- comma-separated, as sent
    payload     TEXT NOT NULL,          -- the event as the target receives it (JSON)
    state       TEXT NOT NULL,          -- waiting | ready | leased | done | dead | superseded
    attempts    INTEGER NOT NULL DEFAULT 0,
    run_at      REAL NOT NULL,
    lease_until REAL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    last_status INTEGER,
    last_error  TEXT
);
-- The claim path: heads of lines that are due, per target and link (paused links skipped).
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (target, link, run_at, id)
    WHERE state = 'ready';
-- A person's line to a target: what is still pending, in order.
CREATE INDEX IF NOT EXISTS deliveries_line ON deliveries (target, person, id)
    WHERE state IN ('waiting', 'ready', 'leased');
CREATE INDEX IF NOT EXISTS deliveries_leased ON deliveries (lease_until)
    WHERE state = 'leased';
CREATE INDEX IF NOT EXISTS deliveries_finished ON deliveries (updated_at)
    WHERE state IN ('done', 'superseded');
CREATE INDEX IF NOT EXISTS deliveries_dead ON deliveries (target, updated_at)
    WHERE state = 'dead';
-- Status: each target's last success and deliveries per minute, its last failure and why.
CREATE INDEX IF NOT EXISTS deliveries_done ON deliveries (target, updated_at)
    WHERE state = 'done';
CREATE INDEX IF NOT EXISTS deliveries_failed ON deliveries (target, updated_at)
    WHERE last_error IS NOT NULL;
-- A link without a row is a draft (or tested); see relay/db/links.py for the states.
CREATE TABLE IF NOT EXISTS link_states (
    link        TEXT PRIMARY KEY,
    paused      INTEGER NOT NULL,
    reason      TEXT,
    changed_at  REAL NOT NULL,
    started     INTEGER NOT NULL DEFAULT 0  -- an admin started it: it delivers while tested
);
-- Each site's last connection test, and the last one that passed (what lets its links deliver).
-- A fingerprint is sha256 of the site's URL and its key's id then: never the key itself.
CREATE TABLE IF NOT EXISTS site_tests (
    site        TEXT PRIMARY KEY,
    tested_at   REAL NOT NULL,
    passed      INTEGER NOT NULL,
    checks      TEXT NOT NULL,          -- JSON: each check's name, status, detail and fix
    url         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    passed_at   REAL,
    passed_url  TEXT,
    passed_fingerprint TEXT
);
-- Each link's initial sync, per source site: a resumable cursor (see relay/work/initial_sync.py).
CREATE TABLE IF NOT EXISTS backfills (
    link        TEXT NOT NULL,
    source      TEXT NOT NULL,          -- the site whose users are read
    generation  INTEGER NOT NULL,       -- which start of the link (part of the event ids)
    after       INTEGER NOT NULL DEFAULT 0,  -- the cursor: last user id of the site done
    total       INTEGER,                -- users of the site, as its last page said
    done        INTEGER NOT NULL DEFAULT 0,  -- users read and queued (or left out)
    queued      INTEGER NOT NULL DEFAULT 0,  -- deliveries queued for them
    started_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    finished_at REAL,                   -- the site's last page is queued
    completed_at REAL,                  -- ... and every delivery of it settled
    last_error  TEXT,
    PRIMARY KEY (link, source)
);
-- Each reconciliation of a link (relay/work/reconcile.py); summary: JSON counts, or the error.
CREATE TABLE IF NOT EXISTS reconcile_runs (
    id          INTEGER PRIMARY KEY,
    link        TEXT NOT NULL,
    started_at  REAL NOT NULL,
    finished_at REAL,
    summary     TEXT
);
CREATE INDEX IF NOT EXISTS reconcile_runs_link ON reconcile_runs (link, id);
-- A site's users' last changes per target (relay/db/user_status.py).
CREATE INDEX IF NOT EXISTS deliveries_person ON deliveries (person, target, id);
-- Whether a person was within a link's role rules at their last change judged for a target
-- (relay/db/scope.py): one who enters is sent whole, as a create.
CREATE TABLE IF NOT EXISTS link_scope (
    link        TEXT NOT NULL,
    target      TEXT NOT NULL,
    person      INTEGER NOT NULL,
    in_scope    INTEGER NOT NULL,
    updated_at  REAL NOT NULL,
    PRIMARY KEY (link, target, person)
);
-- A person's last change from a site that a link's rule kept from a target (removed when a
-- later change of theirs is queued for that target): what user-status says of it.
CREATE TABLE IF NOT EXISTS filtered_changes (
    source      TEXT NOT NULL,
    target      TEXT NOT NULL,
    person      INTEGER NOT NULL,
    link        TEXT NOT NULL,          -- the link whose rule it was
    event_id    TEXT NOT NULL,
    rule        TEXT NOT NULL,          -- roles.outgoing or roles.incoming
    reason      TEXT NOT NULL,
    at          REAL NOT NULL,
    PRIMARY KEY (source, target, person)
);
-- How many changes each link's rules filtered (rule 'unjudged': let through unjudged).
CREATE TABLE IF NOT EXISTS filter_counts (
    link        TEXT NOT NULL,
    rule        TEXT NOT NULL,
    count       INTEGER NOT NULL,
    last_at     REAL NOT NULL,
    PRIMARY KEY (link, rule)
);
"""
#: Changes to tables an older database already has, by the version that made them. (New tables
#: and indexes need no entry: SCHEMA creates whatever is missing.)
MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: ("DROP INDEX IF EXISTS accounts_email", "DROP INDEX IF EXISTS accounts_login",
        "ALTER TABLE link_states ADD COLUMN started INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE site_keys ADD COLUMN previous_sealed BLOB",
        "ALTER TABLE site_keys ADD COLUMN previous_until REAL"),
    3: (),  # backfills: a new table, created by SCHEMA (the bump makes older databases run it)
    4: (),  # reconcile_runs: a new table, created by SCHEMA (likewise)
    5: (),  # link_scope, filtered_changes, filter_counts, deliveries_person: new (likewise)
}


def prepare(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit that precedes a 202 survives power loss, not just a process crash.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA foreign_keys=OFF")
    if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
        _migrate(conn)


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema up to date, once, even with several processes opening it at once."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]  # again, under the lock
        if version < SCHEMA_VERSION:
            if version > 0:  # an older database: alter the tables it has, keeping their rows
                for target in sorted(MIGRATIONS):
                    if version < target:
                        for statement in MIGRATIONS[target]:
                            conn.execute(statement)
            for statement in _statements(SCHEMA):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _statements(script: str) -> list[str]:
    """A script's statements, one by one (``executescript`` would commit our transaction)."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    return statements
