"""`userrelay sites add` on a real terminal (a pty): each question asked, an invalid answer
asked again with the reason, roles checked against the remote's, and Ctrl-C or end of input
writing nothing.
"""

from __future__ import annotations

import fcntl
import os
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
from relay.constants import LINK_FIELDS
from tests.wizard_support import (
    EXAMPLE,
    KEY,
    ROOT,
    add,
    no_terminal,  # noqa: F401 - autouse: flags mode, stdin not a terminal
    record_roles_listed,
    stored_key,
)


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
