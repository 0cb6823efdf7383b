"""The configuration as an operator meets it on the command line: YAML mistakes named with
their line, check-config checking what serve checks, one database per configuration, hints
that work when pasted, and the relay's public URL in what the wizard prints.

Each test runs ``userrelay`` as a child process (tests/cli_run.py: no traceback, no hang).
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest
import yaml

from tests.cli_run import userrelay

ROOT = Path(__file__).resolve().parent.parent
TWO_SITES = """\
sites:
  - id: shop
    url: https://shop.example.com
  - id: branch
    url: https://branch.example.com
"""
LINK = """\
links:
  - id: shop-branch
    site: shop
    remote: branch
    direction: push
"""


def check(tmp_path: Path, text: str) -> tuple[int, str]:
    path = tmp_path / "relay.yaml"
    path.write_text(text)
    result = userrelay("check-config", "--config", path)
    return result.code, result.err


def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path: Path) -> None:
    code, err = check(tmp_path, TWO_SITES + LINK + LINK.replace("shop-branch", "other"))

    assert 2 == code
    assert "line 11, column 1: the key 'links' is given twice in the same mapping " \
        "(lines 6 and 11)" in err


def test_a_mis_indented_site_is_not_merged_into_the_one_above(tmp_path: Path) -> None:
    merged = TWO_SITES.replace("  - id: branch\n    url", "    id: branch\n    url")

    code, err = check(tmp_path, merged)

    assert 2 == code
    assert "the key 'id' is given twice in the same mapping (lines 2 and 4)" in err


def test_a_syntax_error_gives_its_line_and_column_and_a_plain_hint(tmp_path: Path) -> None:
    code, err = check(tmp_path, TWO_SITES.replace("    url: https://branch", "   url: https://branch"))

    assert 2 == code
    assert "not valid YAML at line 5, column 4" in err
    assert "check the indentation of this line and of the line above" in err


def test_a_missing_key_says_missing(tmp_path: Path) -> None:
    code, err = check(tmp_path, TWO_SITES + "links:\n  - id: shop-branch\n    site: shop\n")

    assert 2 == code
    assert "links[0] (shop-branch).remote: missing; expected one of the sites" in err
    assert "links[0] (shop-branch).direction: missing" in err
    assert "None" not in err


@pytest.mark.parametrize("text", ["", "# nothing but a comment\n"])
def test_check_config_refuses_an_empty_file_as_serve_does(tmp_path: Path, text: str) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text(text)

    for result in (userrelay("check-config", path), userrelay("serve", "--config", path)):
        assert 2 == result.code
        assert "the file holds no settings" in result.err


def test_check_config_refuses_two_sites_at_one_url_as_serve_does(tmp_path: Path) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text(TWO_SITES.replace("branch.example.com", "shop.example.com"))

    for result in (userrelay("check-config", path), userrelay("serve", "--config", path)):
        assert 2 == result.code
        assert "https://shop.example.com is also the URL of site 'shop'" in result.err


def test_check_config_takes_config_like_every_other_command_and_the_bare_path(
        tmp_path: Path) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text(TWO_SITES + LINK)

    flag = userrelay("check-config", "--config", path)
    bare = userrelay("check-config", path)
    env = userrelay("check-config", env={"USERRELAY_CONFIG": str(path)})

    for result in (flag, bare, env):
        assert 0 == result.code, result.err
        assert f"OK (2 sites, 1 links; database {tmp_path / 'var' / 'relay.sqlite3'})" \
            in result.out


def test_the_help_names_the_default_configuration_and_the_environment_variable() -> None:
    top = userrelay("--help")
    serve = userrelay("serve", "--help")

    assert "USERRELAY_CONFIG" in top.out and "config.yaml" in top.out
    assert "USERRELAY_CONFIG" in serve.out and "config.yaml" in serve.out


def test_hints_carry_the_config_they_were_given(tmp_path: Path) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text(TWO_SITES + LINK)

    listed = userrelay("links", "list", "--config", path)
    generated = userrelay("keys", "generate", "shop", "--config", path)
    status = userrelay("status", "--config", path)

    assert f"run userrelay keys generate shop --config {path}, paste" in listed.out
    assert f"    userrelay sites test shop --config {path}\n" in generated.out
    assert f"NO KEY: run userrelay keys generate branch --config {path}" in status.out


def test_two_configurations_in_one_folder_never_share_a_database(tmp_path: Path) -> None:
    shutil.copy(ROOT / "config.example.yaml", tmp_path / "config.example.yaml")
    example = tmp_path / "config.example.yaml"
    mine = tmp_path / "config.yaml"
    userrelay("keys", "generate", "shop", "--config", example)

    added = userrelay("sites", "add", "--config", mine, "--id", "shop",
                      "--url", "https://shop.mine.example")
    example_status = userrelay("status", "--config", example)

    assert 0 == added.code, added.err
    assert {"database": "var/config.sqlite3"}.items() <= yaml.safe_load(mine.read_text()).items()
    assert (tmp_path / "var" / "config.sqlite3").exists()
    assert "shop (Main store, https://shop.example.com)\n" in example_status.out  # its key kept
    assert "NO KEY: run userrelay keys generate shop" not in example_status.out


def test_a_configuration_naming_no_database_beside_the_old_default_one_is_refused(
        tmp_path: Path) -> None:
    (tmp_path / "var").mkdir()
    shutil.copy(ROOT / "config.example.yaml", tmp_path / "old.yaml")
    userrelay("keys", "generate", "shop", "--config", tmp_path / "old.yaml")  # var/userrelay...
    path = tmp_path / "relay.yaml"
    path.write_text(TWO_SITES)

    serve = userrelay("serve", "--config", path)
    status = userrelay("status", "--config", path)

    for result in (serve, status):
        assert 2 == result.code
        assert "add `database: var/userrelay.sqlite3`" in result.err
    assert not (tmp_path / "var" / "relay.sqlite3").exists()


def test_the_wizard_prints_the_public_url_for_userrelay_url_and_warns_of_loopback(
        tmp_path: Path) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text("public_url: https://relay.example.com\n" + TWO_SITES)
    behind_proxy = userrelay("sites", "add", "--config", path, "--id", "blog",
                             "--url", "https://blog.example.com")
    other = tmp_path / "plain.yaml"
    other.write_text(TWO_SITES)
    loopback = userrelay("sites", "add", "--config", other, "--id", "blog",
                         "--url", "https://blog.example.com")

    assert "define( 'USERRELAY_URL', 'https://relay.example.com' );" in behind_proxy.out
    assert "is an address of this machine only" not in behind_proxy.out
    assert "define( 'USERRELAY_URL', 'http://127.0.0.1:8480' );" in loopback.out
    assert f"set public_url in {other}" in loopback.out


def test_reconcile_on_an_untested_link_stops_before_contacting_a_site(tmp_path: Path) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text(TWO_SITES + LINK)
    userrelay("keys", "generate", "shop", "--config", path)
    userrelay("keys", "generate", "branch", "--config", path)

    result = userrelay("reconcile", "shop-branch", "--config", path)

    assert 1 == result.code
    assert result.err.startswith("userrelay: link 'shop-branch' cannot be compared yet: site "
                                 "'shop' has not passed a connection test yet; run userrelay "
                                 f"sites test shop --config {path}")
    assert "{" not in result.err and "Cannot connect" not in result.err
    assert "" == result.out


@pytest.mark.parametrize("text", [
    "a: !!timestamp 2020-99-99\n", "a: !!timestamp soon\n", "a: !!set [[1]]\n",
    "a: !!int 0x\n", "a: !!float x\n",
    "sites: !!omap [x]\n", "delivery: {lease: 1e400}\n", "sites: [{id: a, url: 7}]\n",
])
def test_check_config_names_a_value_yaml_cannot_build_without_a_traceback(
        tmp_path: Path, text: str) -> None:
    code, err = check(tmp_path, text)

    assert 2 == code
    assert err.startswith(f"{tmp_path / 'relay.yaml'}: 1 problem(s) in the configuration:")


def test_no_mangled_copy_of_the_example_makes_check_config_fail_otherwise(
        tmp_path: Path) -> None:
    """A bounded fuzz, in process (a child process each would take minutes): whatever the
    bytes, loading and checking end in a ConfigError or a configuration, nothing else."""
    import random

    from relay import config as config_module
    from relay.daemon import startup
    from relay.errors import ConfigError

    pieces = [b"[", b"]", b"{", b"}", b":", b"- ", b"\n", b"  ", b"\t", b"'", b'"', b"*a",
              b"&a ", b"<<: ", b"? ", b"~", b"1e400", b"\xff", b"#", b",", b"!!omap ",
              b"!!set ", b"!!timestamp ", b"---\n", b"http://[::1", b"- {id: [a]}\n"]
    example = (ROOT / "config.example.yaml").read_bytes()
    path = tmp_path / "relay.yaml"
    randomly = random.Random(9)
    for _ in range(2000):
        data = bytearray(example)
        for _ in range(randomly.randint(1, 6)):
            at = randomly.randrange(len(data))
            if randomly.random() < 0.5:
                data[at:at] = randomly.choice(pieces)
            else:
                del data[at:at + randomly.randint(1, 20)]
        path.write_bytes(bytes(data))
        with contextlib.suppress(ConfigError):
            startup.problems(config_module.load(path))
