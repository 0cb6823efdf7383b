"""The README's path on real WordPress: from an empty config to a user on the other site.

Two more sites of the session's lab, configured only with ``userrelay sites add``, tested with
``userrelay sites test``, linked with ``userrelay links start``, served by a relay of their own.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.lab_site import Site
from tests.e2e.world import PLUGIN, World, free_port, user, wait_until

pytestmark = pytest.mark.wordpress
PASTE = re.compile(r"define\( '(USERRELAY_\w+)', '([^']+)' \);")


def userrelay(cwd: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "relay", *args], cwd=cwd, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert 0 == done.returncode, f"userrelay {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture
def two_more_sites(world: World) -> Iterator[tuple[Site, Site]]:
    sites = tuple(world.lab.add_site(name, free_port(), plugin_dirs={"userrelay": PLUGIN})
                  for name in ("shop", "branch"))
    try:
        yield sites  # type: ignore[misc]
    finally:
        for site in sites:
            site.stop()


def test_from_an_empty_config_to_a_user_on_the_other_site(
        two_more_sites: tuple[Site, Site], tmp_path: Path) -> None:
    shop, branch = two_more_sites
    port = free_port()
    (tmp_path / "config.yaml").write_text(f"listen:\n  port: {port}   # free on this machine\n")

    for site, link in ((shop, []), (branch, ["--remote", "shop", "--direction", "pull",
                                             "--incoming", "create,edit,roles"])):
        out = userrelay(tmp_path, "sites", "add", "--config", "config.yaml", "--id", site.name,
                        "--url", site.url, "--allow-http", *link)
        site.set_constants(dict(PASTE.findall(out)))  # pasted into wp-config.php
    log = tmp_path / "relay.log"
    with log.open("wb") as stderr:
        relay = subprocess.Popen(
            [sys.executable, "-m", "relay", "serve", "--config", "config.yaml"], cwd=tmp_path,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        wait_until("the relay listens", lambda: _listening(relay, port, log), timeout=20,
                   every=0.05)
        userrelay(tmp_path, "sites", "test", "branch", "--config", "config.yaml")
        userrelay(tmp_path, "sites", "test", "shop", "--config", "config.yaml")
        userrelay(tmp_path, "links", "start", "branch-shop", "--config", "config.yaml")

        shop.php("wp_insert_user(['user_login' => 'newcomer', 'user_pass' => 'N3w-comer!pass', "
                 "'user_email' => 'newcomer@example.test', 'role' => 'author']);")

        arrived = wait_until("the new user reaches the branch",
                             lambda: user(branch, "newcomer@example.test"), timeout=60)
        assert ("newcomer", ["author"]) == (arrived["login"], arrived["roles"])
        assert "branch-shop (branch -> shop, pull): active" in userrelay(
            tmp_path, "status", "--config", "config.yaml")
    finally:
        relay.send_signal(signal.SIGTERM)
        try:
            relay.wait(30)
        except subprocess.TimeoutExpired:
            relay.kill()
            relay.wait()


def _listening(relay: subprocess.Popen[bytes], port: int, log: Path) -> bool:
    assert relay.poll() is None, f"the relay exited:\n{log.read_text()[-3000:]}"
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
    except OSError:
        return False
    return True
