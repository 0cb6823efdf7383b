"""Configuration: loading fails loudly with the key path, the bad value and what was expected."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from relay import config as config_module
from relay.config import SETTINGS
from relay.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
GOOD = """
sites:
  - {id: shop, label: Shop, url: "https://shop.example.com"}
  - {id: branch, label: Branch, url: "https://branch.example.com"}
links:
  - {id: shop-branch, site: shop, remote: branch, direction: push}
"""


def problems_of(text: str, tmp_path: Path) -> list[str]:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        config_module.load(path)
    return caught.value.problems


def test_the_example_config_is_valid_and_links_two_sites() -> None:
    config = config_module.load(ROOT / "config.example.yaml")

    assert 2 == len(config.sites)
    assert {"create", "edit", "roles"} == set(config.links["shop-to-branch"].outgoing)


def test_omitted_actions_mean_the_recommended_ones(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(GOOD)

    link = config_module.load(path).links["shop-branch"]

    assert (frozenset({"create", "edit", "roles"}),) * 2 == (link.incoming, link.outgoing)
    assert "email" == link.match_by


@pytest.mark.parametrize(("change", "expected"), [
    (("https://shop.example.com", "http://shop.example.com"),
     "sites[0] (shop).url: got 'http://shop.example.com'; expected an https:// URL"),
    (("direction: push", "direction: sideways"),
     "links[0] (shop-branch).direction: got 'sideways'; expected one of push, pull, bidirectional"),
    (("direction: push", "direction: push, sync: [orders]"),
     "links[0] (shop-branch).sync: 'orders' is not supported yet"),
    (("direction: push", "direction: push, outgoing: [create, teleport]"),
     "links[0] (shop-branch).outgoing: got ['create', 'teleport']; expected a list drawn from"),
    (("remote: branch", "remote: nowhere"),
     "links[0] (shop-branch).remote: got 'nowhere'; expected one of the sites: shop, branch"),
    (("links:", "delivery: {batch_size: 0}\nlinks:"),
     "delivery.batch_size: got 0; expected a whole number of at least 1"),
    (("links:", "delivery: {retry_schedule: [5s, soon]}\nlinks:"),
     "delivery.retry_schedule: got ['5s', 'soon']; expected a duration"),
    (("links:", "delivery: {batch: 3}\nlinks:"), "delivery.batch: unknown setting"),
    (("links:", "colour: blue\nlinks:"), "colour: unknown setting"),
])
def test_a_bad_value_is_reported_with_its_key_path_and_what_was_expected(
        tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    problems = problems_of(GOOD.replace(*change), tmp_path)

    assert any(p.startswith(expected) for p in problems), problems


def test_plain_http_is_accepted_only_when_the_site_allows_it(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(GOOD.replace('url: "https://shop.example.com"',
                                 'url: "http://127.0.0.1:8081", allow_http: true'))

    assert "http://127.0.0.1:8081" == config_module.load(path).sites["shop"].url


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = GOOD.replace("direction: push", "direction: up").replace("https://shop", "ftp://shop")

    assert 2 == len(problems_of(text, tmp_path))


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    (problem,) = problems_of("sites: [\n  {id: a\n", tmp_path)

    assert problem.startswith("not valid YAML at line")


def test_check_config_exits_non_zero_with_the_problems_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("direction: push", "direction: sideways"))

    result = subprocess.run([sys.executable, "-m", "relay", "check-config", str(path)],
                            capture_output=True, text=True, check=False)

    assert 2 == result.returncode
    assert "links[0] (shop-branch).direction: got 'sideways'" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_says_ok_for_the_example() -> None:
    result = subprocess.run([sys.executable, "-m", "relay", "check-config",
                             str(ROOT / "config.example.yaml")],
                            capture_output=True, text=True, check=False)

    assert (0, "") == (result.returncode, result.stderr)
    assert "OK (2 sites, 1 links; database " in result.stdout


def test_every_setting_is_documented_with_its_default() -> None:
    docs = (ROOT / "docs" / "configuration.md").read_text()

    undocumented = [s.key for s in SETTINGS if f"`{s.key}`" not in docs]

    assert [] == undocumented


@pytest.mark.parametrize("url", ["http://shop.example.com", "http://10.0.0.5:8080",
                                 "http://192.168.1.20"])
def test_plain_http_to_another_machine_is_refused_even_when_allowed(tmp_path: Path,
                                                                    url: str) -> None:
    (problem,) = problems_of(GOOD.replace('url: "https://shop.example.com"',
                                          f'url: "{url}", allow_http: true'), tmp_path)

    assert "plain http is allowed only for a loopback address" in problem


def test_a_section_under_its_former_name_still_works_and_says_to_rename_it() -> None:
    config = config_module.from_mapping({"backfill": {"page_size": 50}}, source="relay.yaml")

    assert 50 == config.initial_sync.page_size
    assert ["backfill: now called initial_sync; the old name still works, but rename it in "
            "relay.yaml"] == list(config.notes)
    with pytest.raises(ConfigError, match="backfill: the same section as initial_sync"):
        config_module.from_mapping({"backfill": {"page_size": 50},
                                    "initial_sync": {"window": 3}})
