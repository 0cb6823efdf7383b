"""``userrelay sites add``: from an empty config to a configured site and link, never a broken file.

Flags mode runs the real command in-process with a non-terminal stdin; interactive mode runs it
in a child process on a real pseudo-terminal and answers its questions.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from relay import config as config_module
from relay.cli.main import main
from relay.cli.wizard import Prompt
from relay.constants import LINK_FIELDS
from tests.wizard_support import (
    EXAMPLE,
    KEY,
    add,
    no_terminal,  # noqa: F401 - autouse: flags mode, stdin not a terminal
    record_roles_listed,
    stored_key,
)


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


