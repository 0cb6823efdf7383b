"""Applying is all or nothing per event, on real WordPress under parallel deliveries: 200 users
created on site a reach site b through the relay with eight small batches in flight at once;
each arrives exactly once with all its data (role and meta), whatever deadlocks MariaDB met.
"""

from __future__ import annotations

import subprocess
import time
import uuid

import pytest

from tests.e2e.world import World, deliver, wait_until

pytestmark = pytest.mark.wordpress

USERS = 200


def test_an_event_meeting_a_database_error_is_rolled_back_and_answered_503(
        world: World) -> None:
    """Another session holds the user_count option row that wp_insert_user() updates; with a
    short lock wait, that UPDATE fails in the middle of the event (after the user row was
    written). The event must be undone and answered as retryable, and apply once later."""
    b, tag = world.b, uuid.uuid4().hex[:8]
    email = f"locked{tag}@example.test"
    new = {"id": tag, "origin": {"site": "a", "event_id": tag}, "occurred_at": time.time(),
           "actions": ["create", "roles", "metadata"], "match": {"by": "email"},
           "user": {"id": 1, "login": f"locked{tag}", "email": email, "roles": ["author"],
                    "meta": {"favourite_colour": "teal"}}}
    b.php("update_option('user_count', 1);")
    holder = subprocess.Popen(
        ["mariadb", "--no-defaults", "--unbuffered", f"--socket={world.lab.db_socket}",
         "--user=root", f"--database={b.database}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdin is not None and holder.stdout is not None
    output = holder.stdout
    try:
        world.lab.db_query("mysql", "SET GLOBAL innodb_lock_wait_timeout = 2")
        holder.stdin.write("START TRANSACTION; SELECT option_value FROM wp_options WHERE "
                           "option_name = 'user_count' FOR UPDATE; SELECT 'held';\n")
        holder.stdin.flush()
        wait_until("the other session holds the row", lambda: "held" in output.readline())

        [result] = deliver(b, [new])

        assert (503, True) == (result["status"], "retry_after" in result), result
        assert [] == b.db_query(f"SELECT ID FROM wp_users WHERE user_email = '{email}'")
    finally:
        holder.stdin.write("ROLLBACK;\n")
        holder.stdin.close()
        holder.wait(30)
        output.close()
        world.lab.db_query("mysql", "SET GLOBAL innodb_lock_wait_timeout = 50")

    [again] = deliver(b, [new])

    assert 201 == again["status"], again
    assert [{"n": "1"}] == b.db_query(
        f"SELECT COUNT(*) AS n FROM wp_users WHERE user_email = '{email}'")


def test_parallel_creates_each_arrive_once_with_all_their_data(world: World) -> None:
    world.relay.restart_with(
        [{"id": "a-b", "site": "a", "remote": "b", "direction": "push",
          "outgoing": ["create", "edit", "roles", "metadata"], "incoming": [],
          "match_by": "email"}],
        in_flight=8, batch_size=2)
    for site in ("a", "b"):
        world.admin("sites", "test", site)
    world.admin("links", "start", "a-b")
    tag = uuid.uuid4().hex[:6]

    world.a.php(f"""for ($i = 0; $i < {USERS}; $i++) {{
        $id = wp_insert_user(['user_login' => "par{tag}_$i",
            'user_email' => "par{tag}_$i@example.test", 'user_pass' => "Pass-$i",
            'role' => 'author']);
        update_user_meta($id, 'favourite_colour', "colour-$i");
    }}""")

    world.quiet_outboxes()
    wait_until("the relay delivers everything", world.relay.settled, timeout=300, every=1)
    retried = world.relay.db("SELECT last_status, last_error FROM deliveries "
                             "WHERE attempts > 1 AND target = 'b'")
    print(f"deliveries to b sent more than once: {len(retried)}: {retried[:3]}")
    dead = world.relay.db("SELECT last_status, last_error FROM deliveries WHERE state = 'dead' "
                          "AND payload LIKE ?", f"%par{tag}_%")  # the shared lab's others aside
    assert [] == dead
    rows = world.b.db_query(f"""
        SELECT u.user_login AS login,
               (SELECT COUNT(*) FROM wp_users o WHERE o.user_email = u.user_email) AS copies,
               (SELECT meta_value FROM wp_usermeta m WHERE m.user_id = u.ID
                AND m.meta_key = 'wp_capabilities') AS caps,
               (SELECT meta_value FROM wp_usermeta m WHERE m.user_id = u.ID
                AND m.meta_key = 'favourite_colour') AS colour
        FROM wp_users u WHERE u.user_login LIKE 'par{tag}%'""")
    arrived = {row["login"]: row for row in rows}
    assert USERS == len(arrived)
    for i in range(USERS):
        row = arrived[f"par{tag}_{i}"]
        assert ("1", 'a:1:{s:6:"author";b:1;}', f"colour-{i}") == (
            row["copies"], row["caps"], row["colour"]), row
    applied = world.b.db_query(f"""SELECT COUNT(*) AS n FROM wp_userrelay_applied a
        JOIN wp_users u ON u.ID = a.user_id WHERE u.user_login LIKE 'par{tag}%'""")
    assert str(USERS) == applied[0]["n"]
