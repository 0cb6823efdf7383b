"""``userrelay sites add``: from an empty config to a configured site and link, never a broken file.

Flags mode runs the real command in-process with a non-terminal stdin; interactive mode runs it
in a child process on a real pseudo-terminal and answers its questions.
"""

from __future__ import annotations

import fcntl
import io
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from relay import config as config_module
from relay.cli.main import main
from relay.cli.wizard import Prompt
from relay.constants import LINK_FIELDS
from relay.db.links import LinkBook
from relay.keys.keystore import KeyStore

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.yaml"
KEY = re.compile(r"whsec_[A-Za-z0-9+/=]+")


def add(config: Path, *flags: str) -> int:
    return main(["sites", "add", "--config", str(config), *flags])


@pytest.fixture(autouse=True)
def no_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flags mode, as under cron or CI: stdin is not a terminal."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))


def stored_key(config_path: Path, site: str) -> str | None:
    config = config_module.load(config_path)
    store = KeyStore(config.database_path, config.master_key_path)
    try:
        key = store.get(site)
    finally:
        store.close()
    return None if key is None else key.secret


def record_roles_listed(config_path: Path, site: str, roles: list[str]) -> None:
    """``site`` passed a Test Connection at which its plugin listed ``roles``."""
    config = config_module.load(config_path)
    with LinkBook(config) as book:
        book.record_test(site, config.sites[site].url, "key-1", True, [
            {"name": "roles", "status": "ok", "detail": "", "fix": None,
             "data": {"roles": [{"slug": r, "name": r.title()} for r in roles]}}])


def test_flags_make_a_config_from_nothing_that_check_config_accepts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"

    assert 0 == add(path, "--id", "shop", "--label", "Main store",
                    "--url", "https://shop.example.com")
    assert 0 == add(path, "--id", "branch", "--url", "https://branch.example.com",
                    "--remote", "shop", "--direction", "pull",
                    "--incoming", "create,edit,roles,delete")

    assert 0 == main(["check-config", str(path)])
    link = config_module.load(path).links["branch-shop"]
    assert ("branch", "shop", "pull") == (link.site, link.remote, link.direction)
    assert {"create", "edit", "roles", "delete"} == set(link.incoming)
    assert path.read_text().startswith("# UserRelay configuration")


def test_flags_choose_the_links_roles_fields_and_initial_sync(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    assert 0 == add(path, "--id", "shop", "--url", "https://shop.example.com")

    assert 0 == add(path, "--id", "branch", "--url", "https://branch.example.com",
                    "--remote", "shop", "--direction", "bidirectional",
                    "--roles-outgoing", "customer,subscriber", "--roles-incoming", "customer",
                    "--fields", "first_name,last_name,email", "--initial-sync", "false")

    link = config_module.load(path).links["branch-shop"]
    assert (frozenset({"customer", "subscriber"}), frozenset({"customer"})) == (
        link.roles_outgoing, link.roles_incoming)
    assert (frozenset({"first_name", "last_name", "email"}), False) == (link.fields,
                                                                        link.initial_sync)
    out = capsys.readouterr().out
    assert ("Who and what it syncs: roles outgoing: customer, subscriber; incoming: customer; "
            "fields: email, first_name, last_name; initial sync: off.") in out
    assert "only changes from then on travel" in out
    assert 0 == main(["check-config", str(path)])


def test_without_rule_flags_a_link_syncs_every_role_and_field_and_begins_with_an_initial_sync(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    shutil.copy(EXAMPLE, path)

    assert 0 == add(path, "--id", "blog", "--url", "https://blog.example.com",
                    "--remote", "shop", "--direction", "pull")

    link = config_module.load(path).links["blog-shop"]
    assert (None, None, frozenset(LINK_FIELDS), True) == (
        link.roles_outgoing, link.roles_incoming, link.fields, link.initial_sync)
    assert ("Who and what it syncs: every role, every profile field; its first start copies "
            "the users the sites already have.") in capsys.readouterr().out


def test_a_role_the_remote_did_not_list_at_its_test_is_written_with_a_warning(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    assert 0 == add(path, "--id", "shop", "--url", "https://shop.example.com")
    record_roles_listed(path, "shop", ["customer", "subscriber"])

    assert 0 == add(path, "--id", "blog", "--url", "https://blog.example.com",
                    "--remote", "shop", "--direction", "pull", "--roles-incoming",
                    "customr,subscriber")

    assert ("Warning: --roles-incoming: customr: site 'shop' has no such role (did you mean "
            "customer?); it has customer, subscriber.") in capsys.readouterr().out
    assert frozenset({"customr", "subscriber"}) == \
        config_module.load(path).links["blog-shop"].roles_incoming


def test_adding_a_site_to_the_example_keeps_every_line_of_it_in_order(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    shutil.copy(EXAMPLE, path)

    assert 0 == add(path, "--id", "blog", "--url", "https://blog.example.com",
                    "--remote", "shop", "--direction", "push")

    original = EXAMPLE.read_text()
    site = ("    url: https://branch.example.com\n",
            "    url: https://branch.example.com\n"
            "  - id: blog\n    label: blog\n    url: https://blog.example.com\n")
    link = ("  - id: blog-shop\n    site: blog\n    remote: shop\n    sync: [users]\n"
            "    direction: push\n    outgoing: [create, edit, roles]\n    match_by: email\n")
    assert original.replace(*site) + link == path.read_text()
    assert {"shop", "branch", "blog"} == set(config_module.load(path).sites)


def test_items_written_in_flow_style_stay_so_and_quoting_keeps_strings_strings(
        tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text('sites:\n  - {id: shop, label: Shop, url: "https://shop.example.com"}\n')

    assert 0 == add(path, "--id", "blog", "--label", "yes", "--url", "https://blog.example.com")

    lines = path.read_text().splitlines()
    assert lines[:2] == ['sites:', '  - {id: shop, label: Shop, url: "https://shop.example.com"}']
    assert lines[2].startswith("  - {id: blog")
    assert "yes" == config_module.load(path).sites["blog"].label


def test_the_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    shutil.copy(EXAMPLE, path)
    path.chmod(0o640)

    assert 0 == add(path, "--id", "blog", "--url", "https://blog.example.com")

    assert 0o640 == path.stat().st_mode & 0o777
    assert [path.name, "var"] == sorted(p.name for p in tmp_path.iterdir())


def test_the_key_printed_is_the_one_the_relay_stores_and_is_not_in_the_config(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"

    assert 0 == add(path, "--id", "shop", "--url", "https://shop.example.com")

    out = capsys.readouterr().out
    printed = set(KEY.findall(out))
    assert {stored_key(path, "shop")} == printed
    assert printed.pop() not in path.read_text()
    assert "define( 'USERRELAY_SITE', 'shop' );" in out
    assert "define( 'USERRELAY_URL', 'http://127.0.0.1:8480' );" in out
    assert "userrelay sites test shop" in out


def test_the_next_steps_name_both_sites_the_link_and_the_reload(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    shutil.copy(EXAMPLE, path)

    assert 0 == add(path, "--id", "blog", "--url", "https://blog.example.com", "--remote", "shop",
                    "--direction", "bidirectional", "--relay-url", "https://relay.example.com")

    out = capsys.readouterr().out
    for expected in ("define( 'USERRELAY_URL', 'https://relay.example.com' );",
                     f"userrelay sites test blog --config {path}",
                     f"userrelay sites test shop --config {path}",
                     f"userrelay links start blog-shop --config {path}",
                     "systemctl reload userrelay", "can overwrite"):
        assert expected in out


@pytest.mark.parametrize(("flags", "message"), [
    (["--id", "blog", "--url", "http://blog.example.com"],
     "plain http is accepted only for a site on this machine: 127.0.0.0/8, ::1, localhost"),
    (["--id", "blog", "--url", "http://blog.example.com", "--allow-http"],
     "--allow-http is accepted only for a site on this machine"),
    (["--id", "blog", "--url", "http://127.0.0.1:8081"],
     "plain http only with --allow-http"),
    (["--id", "shop", "--url", "https://shop2.example.com"],
     "--id 'shop': a site 'shop' already exists in"),
    (["--id", "blog", "--url", "https://blog.example.com", "--remote", "shop",
      "--direction", "push", "--link-id", "shop-to-branch"],
     "a link 'shop-to-branch' already exists in"),
    (["--id", "shop-to", "--url", "https://blog.example.com", "--remote", "branch",
      "--direction", "push"],
     "--link-id (by default 'shop-to-branch'): a link 'shop-to-branch' already exists in"),
    (["--id", "blog", "--url", "https://blog.example.com", "--remote", "shop",
      "--direction", "push", "--sync", "orders"],
     "--sync 'orders': 'orders' is not supported yet; only users can be synced for now"),
    (["--id", "blog", "--url", "https://blog.example.com", "--remote", "nowhere",
      "--direction", "push"],
     "--remote 'nowhere': expected one of the sites: shop, branch"),
    (["--id", "blog", "--url", "https://blog.example.com", "--remote", "shop",
      "--direction", "push", "--outgoing", "create,teleport"],
     "--outgoing 'create,teleport': got ['create', 'teleport']; expected a list drawn from"),
    (["--id", "blog", "--url", "https://blog.example.com", "--remote", "shop"],
     "not on a terminal, so --direction must be given"),
    (["--id", "blog", "--url", "https://blog.example.com", "--remote", "shop",
      "--direction", "push", "--roles-outgoing", "Shop Manager"],
     "--roles-outgoing 'Shop Manager': got 'Shop', 'Manager'; expected role slugs as "
     "WordPress stores them"),
    (["--id", "blog", "--url", "https://blog.example.com", "--remote", "shop",
      "--direction", "push", "--roles-incoming", "customer"],
     "--roles-incoming 'customer': a push link has no incoming changes to filter"),
    (["--id", "blog", "--url", "https://blog.example.com", "--remote", "shop",
      "--direction", "push", "--fields", "first_name,password"],
     "--fields 'first_name,password': got 'password'; expected a list drawn from first_name"),
    (["--id", "blog", "--url", "https://blog.example.com", "--roles-outgoing", "customer",
      "--initial-sync", "false"],
     "--roles-outgoing, --initial-sync: only for a link, which needs --remote SITE"),
])
def test_a_refusal_says_why_and_leaves_the_file_byte_for_byte_unchanged(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str],
        message: str) -> None:
    path = tmp_path / "config.yaml"
    shutil.copy(EXAMPLE, path)

    assert 0 != add(path, *flags)

    assert message in capsys.readouterr().err
    assert EXAMPLE.read_bytes() == path.read_bytes()
    assert [path.name] == [p.name for p in tmp_path.iterdir()]  # no database, no key either


def test_a_refusal_on_a_missing_file_creates_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert 0 != add(tmp_path / "config.yaml", "--id", "blog", "--url", "http://blog.example.com")

    assert "expected an https:// URL" in capsys.readouterr().err
    assert [] == list(tmp_path.iterdir())


def test_a_broken_config_is_refused_with_its_problems_before_any_question(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("listen: {port: many}\n")

    assert 2 == add(path, "--id", "blog", "--url", "https://blog.example.com")

    assert "listen.port: got 'many'" in capsys.readouterr().err
    assert "listen: {port: many}\n" == path.read_text()


def test_a_prompt_asks_again_with_the_reason_until_the_answer_is_valid() -> None:
    answers, shown = iter(["", "Nope", "fine"]), []

    def read(question: str) -> str:
        shown.append(question)
        return next(answers)

    prompt = Prompt(read=read, write=shown.append)

    answer = prompt.ask("Word", None, lambda text: None if text.islower() else "lower-case, please")

    assert "fine" == answer
    assert ["Word: ", "  an answer is needed", "Word: ", "  lower-case, please", "Word: "] == shown


class Terminal:
    """A child process on a real pseudo-terminal: read what it shows, type answers."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.fd, child = os.openpty()
        self.screen = ""
        self._seen = 0
        self.process = subprocess.Popen(
            [sys.executable, "-m", "relay", *args], cwd=cwd, stdin=child, stdout=child,
            stderr=child, start_new_session=True, preexec_fn=self._controlling_terminal,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        os.close(child)

    @staticmethod
    def _controlling_terminal() -> None:
        """In the child: Ctrl-C on this terminal is its SIGINT, even if our SIGINT is ignored."""
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    def _read(self, deadline: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return True
        try:
            chunk = os.read(self.fd, 4096)
        except OSError:  # EIO: the child has closed the terminal
            chunk = b""
        self.screen += chunk.decode("utf-8", "replace")
        return bool(chunk)

    def expect(self, text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.screen[self._seen:]:
            if time.monotonic() > deadline or not self._read(deadline):
                raise AssertionError(f"{text!r} was not shown; the screen:\n{self.screen}")
        self._seen = self.screen.index(text, self._seen) + len(text)

    def answer(self, question: str, text: str) -> None:
        self.expect(question)
        os.write(self.fd, text.encode() + b"\r")

    def interrupt(self, raw: bytes, timeout: float = 20) -> None:
        """Type ``raw`` once the child sleeps in its read of the terminal.

        A signal that arrives between the prompt and that read waits for the next key (a
        window no person can hit, a test easily can).
        """
        deadline = time.monotonic() + timeout
        while not self._reading():
            assert time.monotonic() < deadline, "the child never waited for an answer"
            time.sleep(0.01)
        os.write(self.fd, raw)

    def _reading(self) -> bool:
        proc = Path(f"/proc/{self.process.pid}")
        return proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0] == "S" and \
            proc.joinpath("wchan").read_text() in ("wait_woken", "n_tty_read")

    def finish(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._read(deadline):
            pass
        return self.process.wait(max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.fd)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Callable[[list[str]], Terminal]]:
    """Starts ``userrelay ARGS`` on a terminal in tmp_path; stops it after the test."""
    started: list[Terminal] = []

    def start(args: list[str]) -> Terminal:
        started.append(Terminal(args, tmp_path))
        return started[-1]

    yield start
    for each in started:
        each.close()


def test_on_a_terminal_each_question_is_asked_and_an_invalid_answer_asked_again(
        tmp_path: Path, terminal: Callable[[list[str]], Terminal]) -> None:
    path = tmp_path / "config.yaml"
    assert 0 == add(path, "--id", "shop", "--url", "https://shop.example.com")
    screen = terminal(["sites", "add", "--config", "config.yaml"])

    screen.answer("Site id (lower-case letters, digits, '-' or '_'; used in URLs and logs): ",
                  "Blog!")
    screen.answer("got 'Blog!'; expected lower-case letters, digits, '-' or '_'", "blog")
    screen.answer("Label, for people [blog]: ", "The blog")
    screen.answer("The WordPress site's address (https://…): ", "http://127.0.0.1:8081")
    screen.answer("127.0.0.1 is on this machine. Allow plain http for it? [y/N]: ", "y")
    screen.answer("The relay's public URL [http://127.0.0.1:8480]: ", "")
    screen.answer("Link blog to which existing site (shop; 'none' for no link) [shop]: ", "")
    screen.answer("Link id [blog-shop]: ", "")
    screen.expect("Orders and posts are coming soon.")
    screen.answer("Sync type [users]: ", "orders")
    screen.answer("'orders' is not supported yet; only users can be synced for now", "")
    screen.expect("bidirectional  both: changes go each way, and a change on either side can "
                  "overwrite the other")
    screen.answer("Direction (push, pull, bidirectional): ", "bidirectional")
    screen.answer("Outgoing actions, comma-separated, or 'none' [create,edit,roles]: ", "")
    screen.expect("delete: only when certain")
    screen.answer("Incoming actions, comma-separated, or 'none' [create,edit,roles]: ",
                  "create, edit, delete")
    screen.answer("Include delete: a user deleted on shop is deleted on the other site too? "
                  "[y/N]: ", "y")
    screen.answer("Roles whose users blog sends to shop, comma-separated, or 'all' [all]: ", "")
    screen.answer("Roles whose users blog takes from shop, comma-separated, or 'all' [all]: ",
                  "")
    screen.answer("Profile fields that travel, comma-separated, or 'all' [all]: ", "")
    screen.answer("Find a person on the other site first by email or login [email]: ", "login")
    screen.answer("send the users the sites already have (its initial sync)? [Y/n]: ", "")
    screen.answer("and make the site's key? [Y/n]: ", "")
    screen.expect("shown only this once")

    assert 0 == screen.finish()
    link = config_module.load(path).links["blog-shop"]
    assert ("bidirectional", "login") == (link.direction, link.match_by)
    assert ({"create", "edit", "roles"}, {"create", "edit", "delete"}) == \
        (set(link.outgoing), set(link.incoming))
    assert (None, None, frozenset(LINK_FIELDS), True) == (
        link.roles_outgoing, link.roles_incoming, link.fields, link.initial_sync)
    assert [stored_key(path, "blog")] == KEY.findall(screen.screen)[:1]


def test_on_a_terminal_the_roles_are_checked_against_those_the_remote_listed_at_its_test(
        tmp_path: Path, terminal: Callable[[list[str]], Terminal]) -> None:
    path = tmp_path / "config.yaml"
    assert 0 == add(path, "--id", "shop", "--url", "https://shop.example.com")
    record_roles_listed(path, "shop", ["customer", "subscriber", "shop_manager"])
    screen = terminal(["sites", "add", "--config", "config.yaml", "--id", "blog", "--label",
                       "Blog", "--url", "https://blog.example.com", "--public-url",
                       "https://relay.example.com", "--remote", "shop", "--link-id", "blog-shop",
                       "--sync", "users", "--direction", "push",
                       "--outgoing", "create,edit,roles", "--match-by", "email"])

    screen.expect("shop's roles at its last Test Connection: customer, shop_manager, subscriber")
    question = "Roles whose users blog sends to shop, comma-separated, or 'all' [all]: "
    screen.answer(question, "Shop Manager")
    screen.expect("got 'Shop', 'Manager'; expected role slugs as WordPress stores them")
    screen.answer(question, "customr, subscriber")
    screen.expect("customr: site 'shop' has no such role (did you mean customer?); it has "
                  "customer, shop_manager, subscriber")
    screen.answer("Keep customr, subscriber anyway (the role may be added to shop later)? "
                  "[y/N]: ", "")
    screen.answer(question, "customer, subscriber")
    screen.expect("email left out still travels, to find the person")
    screen.answer("Profile fields that travel, comma-separated, or 'all' [all]: ", "password")
    screen.expect("got 'password'; expected a list drawn from first_name")
    screen.answer("Profile fields that travel, comma-separated, or 'all' [all]: ",
                  "first_name, last_name, email")
    screen.answer("send the users the sites already have (its initial sync)? [Y/n]: ", "n")
    screen.expect("Who and what it syncs: roles outgoing: customer, subscriber; fields: email, "
                  "first_name, last_name; initial sync: off.")
    screen.answer("and make the site's key? [Y/n]: ", "")
    screen.expect("shown only this once")

    assert 0 == screen.finish()
    link = config_module.load(path).links["blog-shop"]
    assert (frozenset({"customer", "subscriber"}), None) == (link.roles_outgoing,
                                                             link.roles_incoming)
    assert (frozenset({"first_name", "last_name", "email"}), False) == (link.fields,
                                                                        link.initial_sync)


@pytest.mark.parametrize(("keys", "status", "message"), [
    (b"\x03", 130, "Interrupted: nothing was written."),
    (b"\x04", 1, "No more answers: nothing was written."),
])
def test_ctrl_c_or_end_of_input_on_a_terminal_writes_nothing(
        tmp_path: Path, terminal: Callable[[list[str]], Terminal], keys: bytes, status: int,
        message: str) -> None:
    path = tmp_path / "config.yaml"
    shutil.copy(EXAMPLE, path)
    screen = terminal(["sites", "add", "--config", "config.yaml"])

    screen.answer("used in URLs and logs): ", "blog")
    screen.expect("Label, for people [blog]: ")
    screen.interrupt(keys)
    screen.expect(message)

    assert status == screen.finish()
    assert EXAMPLE.read_bytes() == path.read_bytes()
    assert [path.name] == [p.name for p in tmp_path.iterdir()]
