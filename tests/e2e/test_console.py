"""The web console in a real browser (Debian's chromium, headless, driven by Playwright) against
two real WordPress sites: sign in, add both sites through the wizard, paste each key into that
site's Settings → UserRelay in wp-admin, pass Test Connection, choose Users, keep the
recommended rules, Push, Start Synchronization and watch the initial sync reach 100 %; then a
user created in site a's wp-admin shows in site b's users list and in the dashboard; with b
stopped a change queues and the lag rises, and drains once b is back.

Screenshots of every step land in the session's output folder, ``console-screenshots/``.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import support
from tests.e2e.world import PLUGIN, RelayDaemon, free_port, user, wait_until
from tests.e2e.wplab import Lab, Site, ensure_packages

pytestmark = pytest.mark.wordpress
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
KEY = re.compile(r"whsec_[A-Za-z0-9+/=]{20,}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, Site, Site, Any]]:
    """Two WordPress sites with the plugin active and nothing set, and a relay with no site,
    its admin API (and console) on; returns (lab, a, b, relay daemon, console URL, token)."""
    reason = ensure_packages()
    if reason is None and not Path(CHROMIUM).exists():
        reason = f"{CHROMIUM} is missing (Debian's chromium package; .ci/run installs it)"
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the console's browser test, but: {reason}")
        pytest.skip(f"the console's browser test cannot run here: {reason}")
    base = tmp_path_factory.mktemp("console")
    with Lab(base / "lab", keep=False) as wp:
        a = wp.add_site("a", free_port(), plugin_dirs={"userrelay": PLUGIN})
        b = wp.add_site("b", free_port(), plugin_dirs={"userrelay": PLUGIN})
        relay = RelayDaemon(base, {})
        token = support.secret(uuid.uuid4().hex + uuid.uuid4().hex)
        console = relay.enable_admin(token) + "/console/"
        # A file as an operator starts one: no sites, no links; the console adds them.
        relay.config_path.write_text(
            "# UserRelay, set up from the console\n"
            f"listen: {{host: 127.0.0.1, port: {relay.port}}}\n"
            f"database: {base / 'relay.sqlite3'}\n"
            f"admin: {{host: 127.0.0.1, port: {relay.admin_settings['port']}, "  # type: ignore[index]
            f"token_file: {base / 'admin.token'}}}\n"
            "delivery: {retry_schedule: [1s, 2s], jitter: 0.1, max_attempts: 100, timeout: 20, "
            "lease: 60}\n")
        relay.start()
        try:
            yield wp, a, b, (relay, console, token)
        finally:
            relay.stop()


class Shots:
    """Screenshots, numbered in order, in the session's output folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        self.taken: list[Path] = []

    def __call__(self, page: Any, name: str) -> None:
        path = self.folder / f"{len(self.taken) + 1:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)


def wp_open(page: Any, site: Site, path: str) -> None:
    """Open a wp-admin page, logging in on the way when WordPress asks for it."""
    page.goto(f"{site.url}{path}", wait_until="domcontentloaded")
    if "wp-login.php" in page.url:
        page.fill("#user_login", site.admin_login)
        page.fill("#user_pass", site.admin_password)
        page.click("#wp-submit")
        page.wait_for_url(lambda url: "wp-login.php" not in url, wait_until="domcontentloaded",
                          timeout=60_000)


def paste_settings(page: Any, site: Site, relay_url: str, key: str) -> None:
    """What the key page says to do: Settings → UserRelay, the three fields, Save."""
    wp_open(page, site, "/wp-admin/options-general.php?page=userrelay")
    page.fill("#userrelay_url", relay_url)
    page.fill("#userrelay_site", site.name)
    page.fill("#userrelay_key", key)
    page.click("form:has(#userrelay_key) [type=submit]")
    page.wait_for_selector(".notice")


def figure(page: Any, site: str, name: str) -> int:
    text = page.text_content(f'#sites-table tr[data-site="{site}"] [data-figure="{name}"]')
    return int(text.strip()) if text and text.strip().isdigit() else 0


def latest(page: Any, chart: str, name: str) -> float:
    data = page.get_attribute(f"#{chart}", "data-latest") or ""
    found = re.search(rf"\b{name}=([0-9.]+)", data)
    return float(found.group(1)) if found else 0.0


def test_the_wizard_and_dashboard_in_a_browser_against_two_wordpress_sites(lab: Any) -> None:
    from playwright.sync_api import sync_playwright

    wp, a, b, (relay, console, token) = lab
    folder = (support.OUTPUT_DIR or Path(wp.base_dir)) / "console-screenshots"
    shot = Shots(folder)
    for n in range(3):  # users a already has: the initial sync copies them
        a.php(f"wp_insert_user(['user_login' => 'early{n}', 'user_email' => "
              f"'early{n}@example.test', 'user_pass' => 'Early-Pass-{n}', 'role' => 'author']);")
    keys: dict[str, str] = {}
    pages_after_keys: list[str] = []

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        try:
            # Without a session: a page leads to sign-in, a change is refused.
            refused = page.request.post(console + "sites/new", form={"id": "x", "url":
                                        "https://x.example"}, max_redirects=0)
            assert 401 == refused.status
            page.goto(console)
            assert page.url.endswith("/console/sign-in")
            shot(page, "sign-in")
            page.fill("#token", token)
            page.click("button[type=submit]")
            page.wait_for_selector("h1:has-text('Dashboard')")

            def add_site(site: Site, link_to: str | None) -> str:
                page.click("text=+ Add New Site")
                page.fill("#f-url", site.url)
                page.fill("#f-label", f"Site {site.name.upper()}")
                page.fill("#f-id", site.name)
                if link_to:
                    page.select_option("#f-site", link_to)
                shot(page, f"wizard-1-remote-site-{site.name}")
                page.click("text=Add site and make its API key")
                page.wait_for_selector("#api-key")
                shot(page, f"wizard-2-api-key-{site.name}")
                key = support.secret(page.input_value("#api-key"))
                assert page.text_content("#paste-site") == site.name
                return key

            def test_connection(expect_pass: bool) -> None:
                # As a person would, press it again when a slow site timed out (at most
                # twice more, said on stderr); a wrong key fails every time.
                for attempt in range(3 if expect_pass else 1):
                    page.click("#test-connection")
                    page.wait_for_selector("#results")
                    failed = page.locator("text=Connection Test Failed").count()
                    if not expect_pass or not failed:
                        break
                    print(f"Test Connection failed (attempt {attempt + 1}):\n"
                          f"{page.text_content('#results')}", file=sys.stderr)
                assert (failed == 0) == expect_pass, page.text_content("#results")

            keys["a"] = add_site(a, None)
            wp_page = context.new_page()
            paste_settings(wp_page, a, relay.url, keys["a"])
            shot(wp_page, "wp-admin-settings-a")
            page.click("#next")
            wait_until("the relay knows site a", lambda: _reloaded(page, "a"), timeout=30)
            test_connection(True)
            shot(page, "wizard-3-test-connection-a")

            keys["b"] = add_site(b, "a")
            page.click("#next")
            wait_until("the relay knows site b", lambda: _reloaded(page, "b"), timeout=30)
            assert page.is_disabled("#next"), "Next before Test Connection"
            paste_settings(wp_page, b, relay.url, keys["a"])  # a wrong key: a's
            test_connection(False)
            assert page.is_disabled("#next")
            failing = page.locator('#results tr.check-fail[data-check="ping"]')
            assert failing.count() >= 1
            assert "key" in (failing.first.text_content() or "").lower()
            shot(page, "wizard-3-test-connection-wrong-key")
            paste_settings(wp_page, b, relay.url, keys["b"])
            shot(wp_page, "wp-admin-settings-b")
            test_connection(True)
            assert not page.is_disabled("#next")
            shot(page, "wizard-3-test-connection-both")
            page.click("#next")
            page.wait_for_selector("#sync-users")
            assert page.is_checked("#sync-users") and page.is_disabled("#sync-orders")
            shot(page, "wizard-4-synchronization-type")
            page.click("#next")
            page.wait_for_selector("#outgoing-create")
            for action in ("create", "edit", "roles"):
                assert page.is_checked(f"#outgoing-{action}")
            assert not page.is_checked("#outgoing-delete")
            shot(page, "wizard-5-sync-rules")
            page.click("#next")
            page.wait_for_selector("#direction-push")
            page.check("#direction-push")
            shot(page, "wizard-6-sync-direction")
            page.click("#next")
            page.wait_for_selector("#start")
            shot(page, "wizard-7-start-synchronization")
            page.click("#start")
            page.wait_for_url(re.compile(r"/links/a-b/progress"))
            page.wait_for_selector('#progress-text[data-state="completed"][data-percent="100"]',
                                   timeout=120_000)
            shot(page, "wizard-8-initial-sync-complete")
            pages_after_keys.append(page.content())
            for n in range(3):
                assert user(b, f"early{n}@example.test") is not None

            # Each site's own view in wp-admin: its link, direction, actions and state.
            for site, words in ((a, "Push to Remote"), (b, "Pull from Remote")):
                wp_open(wp_page, site, "/wp-admin/options-general.php?page=userrelay")
                row = wp_page.locator('.userrelay-links tr[data-link="a-b"][data-state="active"]')
                assert 1 == row.count() and words in (row.text_content() or "")
                assert wp_page.get_attribute("a.userrelay-console", "href") == console
                assert not KEY.search(wp_page.content())
                shot(wp_page, f"wp-admin-site-view-{site.name}")

            # A user created in a's wp-admin shows in b's users list and in the dashboard.
            login = f"console{uuid.uuid4().hex[:6]}"
            wp_open(wp_page, a, "/wp-admin/user-new.php")
            # The page's script fills in a generated password once the strength meter has
            # loaded, moving the focus: typing before that can land in the password field.
            wp_page.wait_for_function("document.querySelector('#pass1') && "
                                      "document.querySelector('#pass1').value.length > 0 && "
                                      "document.querySelector('#pass-strength-result')"
                                      ".textContent.trim().length > 0", timeout=60_000)
            wp_page.fill("#user_login", login)
            wp_page.fill("#email", f"{login}@example.test")
            wp_page.select_option("#role", "author")
            wp_page.click("#createusersub")
            wp_page.wait_for_url(re.compile(r"users\.php"), wait_until="domcontentloaded")

            def listed() -> bool:
                wp_open(wp_page, b, "/wp-admin/users.php")
                return wp_page.locator(f"text={login}").count() > 0
            wait_until(f"{login} in b's users list", listed, timeout=60, every=1)
            shot(wp_page, "wp-admin-users-b")
            page.goto(console)
            wait_until("the dashboard counts the delivery",
                       lambda: figure(page, "b", "out") >= 1, timeout=30)
            shot(page, "dashboard")

            # b stops: a change queues and the lag rises; b starts: it drains.
            b.stop()
            a.php(f"$u = get_user_by('login', '{login}'); "
                  "wp_update_user(['ID' => $u->ID, 'first_name' => 'Queued']);")
            wait_until("the change queues for b", lambda: figure(page, "b", "queued") >= 1,
                       timeout=60)
            wait_until("the lag chart rises", lambda: latest(page, "chart-lag", "lag") >= 5,
                       timeout=60)
            shot(page, "dashboard-b-down-queue-and-lag")
            b.start()
            wait_until("b's queue drains", lambda: figure(page, "b", "queued") == 0, timeout=120)
            found = user(b, f"{login}@example.test")
            assert found is not None and "Queued" == found["first_name"]
            shot(page, "dashboard-b-back-drained")
            pages_after_keys.append(page.content())

            # A change without the session's CSRF token is refused.
            forged = page.request.post(console + "links/a-b/pause", form={"csrf": "0" * 64})
            assert 403 == forged.status
            for path in ("", "live", "sites/new", "setup/test?site=a&remote=b",
                         "links/a-b/progress"):
                page.goto(console + path)
                pages_after_keys.append(page.content())
            page.set_viewport_size({"width": 390, "height": 844})
            page.goto(console)
            shot(page, "dashboard-phone")
        finally:
            context.close()
            browser.close()

    for text in pages_after_keys:
        assert not KEY.search(text)
        assert all(k not in text for k in keys.values())
    print("screenshots:\n" + "\n".join(str(p) for p in shot.taken), file=sys.stderr)


def _reloaded(page: Any, site: str) -> bool:
    """The test page once the relay, reloaded, knows ``site`` (reload the page till then)."""
    if page.locator("text=reloading its configuration").count() == 0 and \
            page.locator("#test-connection").count() == 1:
        return True
    try:
        page.reload()
    except Exception:  # noqa: BLE001 - the admin listener restarts with the relay
        return False
    return False


def test_the_console_listens_only_on_loopback(lab: Any) -> None:
    _, _, _, (relay, console, _) = lab
    host = console.split("//")[1].split(":")[0]
    assert "127.0.0.1" == host
    with socket.create_connection((host, int(console.split(":")[2].split("/")[0])), 5):
        pass
