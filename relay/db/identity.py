"""One relay-wide identity per person, whatever their id, email or login on each site.

``accounts`` maps (site, that site's user id) to a person. A site's user is matched to an
existing person only on first contact, by email (default) or login as the link says (by login
for a user without an email); after
that the site's user id decides, so an email or login change never splits a person in two.
Partners teach us their ids in their answers (``learn``). Runs inside the writer's transaction.
"""

from __future__ import annotations

import sqlite3
import time

import structlog

log = structlog.get_logger("relay.db.identity")


def resolve(conn: sqlite3.Connection, site: str, user_id: int, email: str, login: str,
            match_by: list[tuple[str, str]]) -> tuple[int, bool]:
    """The person behind ``site``'s user, and whether they are new to the relay.

    ``match_by`` lists (partner site, email|login) to try, in order, on first contact.
    """
    row = conn.execute("SELECT person, email, login FROM accounts WHERE site = ? AND user_id = ?",
                       (site, user_id)).fetchone()
    if row is not None:
        if (row[1], row[2]) != (email, login):
            conn.execute("UPDATE accounts SET email = ?, login = ? WHERE site = ? AND user_id = ?",
                         (email, login, site, user_id))
        return int(row[0]), False
    person, new = None, False
    for partner, field in match_by:
        if not email:
            field = "login"  # A user without an email is matched by login.
        value = email if field == "email" else login
        hit = conn.execute(f"SELECT person FROM accounts WHERE site = ? AND {field} = ?",
                           (partner, value)).fetchone()
        if hit is not None:
            person = int(hit[0])
            break
    if person is None:
        person, new = int(conn.execute("INSERT INTO persons (created_at) VALUES (?) RETURNING id",
                                       (time.time(),)).fetchone()[0]), True
    conn.execute("INSERT INTO accounts (site, user_id, person, email, login) "
                 "VALUES (?, ?, ?, ?, ?)", (site, user_id, person, email, login))
    return person, new


def account_on(conn: sqlite3.Connection, person: int, site: str) -> int | None:
    """The person's user id on ``site``, when known."""
    row = conn.execute("SELECT user_id FROM accounts WHERE person = ? AND site = ?",
                       (person, site)).fetchone()
    return None if row is None else int(row[0])


def learn(conn: sqlite3.Connection, site: str, user_id: int, person: int, email: str,
          login: str) -> None:
    """A partner told us which of its users it applied the person's event to."""
    row = conn.execute("SELECT person FROM accounts WHERE site = ? AND user_id = ?",
                       (site, user_id)).fetchone()
    if row is not None and int(row[0]) == person:
        return
    if row is not None:
        log.warning("identity_reassigned", site=site, user_id=user_id, was=int(row[0]), now=person)
    conn.execute("DELETE FROM accounts WHERE site = ? AND person = ?", (site, person))
    conn.execute("INSERT OR REPLACE INTO accounts (site, user_id, person, email, login) "
                 "VALUES (?, ?, ?, ?, ?)", (site, user_id, person, email, login))


def forget(conn: sqlite3.Connection, site: str, person: int) -> None:
    """The person's user on ``site`` was deleted."""
    conn.execute("DELETE FROM accounts WHERE site = ? AND person = ?", (site, person))
