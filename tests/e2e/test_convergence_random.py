"""End to end on two real WordPress sites whose clocks are 90 s apart: 300 random edits made on
both sites while the relay is down, three times over, end with both sites identical and on the
newest change of every field group (docs/adr/0011-convergent-versions.md).

Site a's PHP runs 90 s ahead (libfaketime, tests/e2e/wplab.py). After each round of edits the
test reads back, per edited field group, its value and the version the site stamped; the
expected end state is, per user and group, the value of the highest version. Changes made in a
later phase (after the earlier phases' deliveries settled) must win over every earlier one,
whichever site's clock is ahead: that is what a hybrid logical clock adds to a timestamp.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from relay.model import versions
from tests.e2e.lab_site import Site
from tests.e2e.test_sync import _php
from tests.e2e.world import World, wait_until

pytestmark = pytest.mark.wordpress

USERS, EDITS, PHASES, ROUNDS = 20, 300, 3, 4
SKEW = 90
KINDS = ("first_name", "last_name", "email", "role", "meta", "password")
GROUP_OF = {"first_name": "profile", "last_name": "profile", "email": "email",
            "role": "roles", "meta": "meta:favourite_colour", "password": "password"}
ROLES = ("subscriber", "author", "contributor")

EDIT = """
foreach ($ops as $op) {
    $id = (int) $op['uid'];
    switch ($op['kind']) {
        case 'first_name': case 'last_name':
            wp_update_user(['ID' => $id, $op['kind'] => $op['value']]); break;
        case 'email': wp_update_user(['ID' => $id, 'user_email' => $op['value']]); break;
        case 'role': (new WP_User($id))->set_role($op['value']); break;
        case 'meta': update_user_meta($id, 'favourite_colour', $op['value']); break;
        case 'password': wp_set_password($op['value'], $id); break;
    }
}
"""

READ = """
$out = [];
foreach ($uids as $id) {
    clean_user_cache($id);
    $u = get_userdata($id);
    $roles = array_values($u->roles); sort($roles);
    $out[$id] = ['profile' => [$u->first_name, $u->last_name], 'email' => $u->user_email,
        'roles' => $roles, 'password' => $u->user_pass,
        'meta:favourite_colour' => get_user_meta($id, 'favourite_colour', true),
        'versions' => json_decode((string) get_user_meta($id, 'userrelay_versions', true), true)];
}
echo json_encode($out);
"""


def read(site: Site, uids: list[int]) -> dict[int, dict[str, Any]]:
    found = site.php_json(f"$uids = {_php(uids)};\n{READ}")
    return {int(k): {**v, "versions": v["versions"] or {}} for k, v in found.items()}


def test_random_edits_on_skewed_sites_converge_on_the_newest(world: World) -> None:
    rng = random.Random(11)
    world.a.set_clock_offset(SKEW)
    try:
        world.link("bidirectional")
        _run(world, rng)
    finally:
        world.a.set_clock_offset(0)


def _run(world: World, rng: random.Random) -> None:
    tag = f"{rng.randrange(16**8):08x}"
    emails = [f"conv{tag}-{i}@example.test" for i in range(USERS)]
    created = world.a.php_json(f"$emails = {_php(emails)};\n" + """
        $ids = [];
        foreach ($emails as $i => $email) {
            $ids[] = wp_insert_user(['user_login' => 'conv' . md5($email), 'user_email' => $email,
                'user_pass' => 'Start-Pass-1', 'role' => 'subscriber', 'first_name' => 'F' . $i,
                'last_name' => 'L' . $i]);
        }
        echo json_encode($ids);""")
    ids_a = [int(i) for i in created]
    world.quiet()
    ids_b = [int(world.b.php_json(f"echo json_encode(get_user_by('email', {json.dumps(e)})->ID);"))
             for e in emails]
    ids = {"a": ids_a, "b": ids_b}
    sites = {"a": world.a, "b": world.b}

    # (user index, group) -> [(phase, version, value)], each the state right after a round
    candidates: dict[tuple[int, str], list[tuple[int, str, Any]]] = {}
    counter = 0
    for phase in range(PHASES):
        world.relay.stop()
        for round_ in range(ROUNDS):
            name = "ab"[round_ % 2]
            ops, touched = [], set()
            for _ in range(EDITS // (PHASES * ROUNDS)):
                counter += 1
                i, kind = rng.randrange(USERS), rng.choice(KINDS)
                value: str = {"email": f"conv{tag}-{i}-{counter}@example.test",
                              "role": rng.choice(ROLES),
                              "password": f"Pass-{counter}-x"}.get(kind, f"{kind}-{counter}")
                ops.append({"uid": ids[name][i], "kind": kind, "value": value})
                touched.add((i, GROUP_OF[kind]))
            before = read(sites[name], ids[name])
            sites[name].php(f"$ops = {_php(ops)};\n{EDIT}")
            after = read(sites[name], ids[name])
            for i, group in touched:
                state, earlier = after[ids[name][i]], before[ids[name][i]]
                if versions.held(state["versions"], group) == versions.held(earlier["versions"],
                                                                            group):
                    continue  # the edits set what the user already had: no change was made
                candidates.setdefault((i, group), []).append(
                    (phase, versions.held(state["versions"], group), state[group]))
        world.relay.start()
        world.quiet()

    final = {name: read(site, ids[name]) for name, site in sites.items()}
    groups = sorted(set(GROUP_OF.values()))
    for i in range(USERS):
        a, b = final["a"][ids_a[i]], final["b"][ids_b[i]]
        assert [a[g] for g in groups] == [b[g] for g in groups], f"user {i} differs"
        for group in groups:
            seen = candidates.get((i, group), [])
            if not seen:
                continue
            _, newest, value = max(seen, key=lambda c: versions.key(c[1]))
            assert value == a[group], f"user {i} {group}: not the newest change"
            # A later phase's change beats every earlier one, whichever clock ran ahead.
            for phase, version, _ in seen:
                later = [v for p, v, _ in seen if p > phase]
                assert all(versions.key(v) > versions.key(version) for v in later), (
                    f"user {i} {group}: a change of phase {phase} is not older than a later "
                    "phase's")
    assert [] == world.relay.db("SELECT id, last_error FROM deliveries WHERE state = 'dead' "
                                "AND payload LIKE ?", f"%conv{tag}-%")
    report = json.loads(world.admin("drift", "a-b", "--json"))
    # Of this test's users (every email it gives starts so): the shared lab may hold other
    # tests' users apart on purpose, e.g. a copy an initial sync kept because the target had
    # changed it later, which a bidirectional link's drift then reports.
    assert [] == [e for e in report["entries"] if str(e["match"]).startswith(f"conv{tag}-")]
    wait_until("nothing is pending", world.relay.settled)
