"""``userrelay sites add``: the guided set-up of a site, its key and its link to a remote site.

Owns the questions and their order: the site (id, label, address), the relay's public URL as
the sites reach it (asked once, then kept as ``public_url``), then the link to an existing
site (relay/cli/wizard_link.py: sync type, direction, actions and roles each way, fields,
matching, initial sync). On a terminal each question is
asked with its default in brackets and asked again, with the reason, until the answer is
valid; a flag given answers its question. Without a terminal only flags are used. Nothing is
written until every answer is in and the edited file passes the relay's own validation
(``relay.config.edit``); Ctrl-C or end of input writes nothing.
The new key is shown once, never written to the configuration or a log.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from relay.cli import wizard_link
from relay.cli.wizard_link import Check, LinkStep
from relay.config import Config, is_loopback
from relay.config.checks import LOOPBACK, relay_url_problem, site_problem, url_problem
from relay.config.edit import ConfigFile
from relay.errors import SetupRefused
from relay.keys.keystore import KeyStore


class Prompt:
    """Questions on a terminal: a default in brackets, asked again with the reason until valid.

    ``read`` and ``write`` default to ``input`` and ``print``; tests pass their own.
    """

    def __init__(self, read: Callable[[str], str] = input,
                 write: Callable[[str], None] = print) -> None:
        self._read = read
        self._write = write

    def say(self, text: str = "") -> None:
        self._write(text)

    def ask(self, question: str, default: str | None = None, check: Check | None = None) -> str:
        shown = f" [{default}]" if default else ""
        while True:
            answer = self._read(f"{question}{shown}: ").strip() or default
            problem = "an answer is needed" if not answer else check(answer) if check else None
            if answer and problem is None:
                return answer
            self.say(f"  {problem}")

    def confirm(self, question: str, default: bool) -> bool:
        while True:
            answer = self._read(f"{question} [{'Y/n' if default else 'y/N'}]: ").strip().lower()
            if not answer:
                return default
            if answer in ("y", "yes", "n", "no"):
                return answer.startswith("y")
            self.say("  answer y or n")


def register_sites(actions: Any, default_config: str) -> None:
    """``userrelay sites add`` (see relay/cli/sites.py)."""
    add = actions.add_parser(
        "add", help="add a site, make its key and link it to an existing site (guided)",
        description="Add a WordPress site to the configuration, make its API key and link it to "
                    "an existing site. On a terminal it asks each question; flags answer them.")
    add_arguments(add, default_config)


def add_arguments(parser: argparse.ArgumentParser, default_config: str) -> None:
    def flag(name: str, metavar: str, text: str) -> None:
        parser.add_argument(name, metavar=metavar, help=text)

    parser.add_argument("--config", default=default_config, metavar="FILE",
                        help="YAML configuration file (created if missing)")
    flag("--id", "SITE", "the new site's id: lower-case letters, digits, '-', '_'")
    flag("--label", "TEXT", "a name for people (default: the id)")
    flag("--url", "URL", "the WordPress site's https:// address")
    parser.add_argument("--allow-http", action="store_true",
                        help=f"accept an http:// address; only for a loopback host ({LOOPBACK})")
    parser.add_argument("--public-url", "--relay-url", dest="public_url", metavar="URL",
                        help="the relay's address as the sites reach it (the setting "
                        "public_url, printed for USERRELAY_URL); asked the first time, "
                        "default: public_url, else http://listen.host:listen.port")
    wizard_link.add_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    prompt = Prompt() if sys.stdin.isatty() else None
    try:
        Wizard(args, prompt, sys.stdout).run()
    except KeyboardInterrupt:
        print("\nInterrupted: nothing was written.", file=sys.stderr)
        return 130
    except EOFError:
        print("\nNo more answers: nothing was written.", file=sys.stderr)
        return 1
    return 0


class Wizard:
    def __init__(self, args: argparse.Namespace, prompt: Prompt | None, out: TextIO) -> None:
        self.args = args
        self.prompt = prompt
        self.out = out

    def say(self, text: str = "") -> None:
        print(text, file=self.out)

    def run(self) -> None:
        file = ConfigFile(Path(self.args.config))
        if self.prompt is None:
            self._check_flags()
        else:
            self.say(f"Adding a WordPress site to {file.path}"
                     f"{'' if file.exists else ' (a new file)'}. Ctrl-C stops without writing.\n")
        config = file.config
        site = self._site(config, file.path)
        relay_url, settings = self._public_url(config)
        link = LinkStep(self.args, self.prompt, self.say, self._answer).ask(
            config, file.path, site["id"])
        file.add(site, link, settings)
        self.say(_summary(site, link))
        if self.prompt and not self.prompt.confirm(f"Write this to {file.path} and make the "
                                                   "site's key?", True):
            self.say("Nothing was written.")
            return
        try:
            store = KeyStore(config.database_path, config.master_key_path, config.flag)
        except (OSError, sqlite3.Error) as exc:
            raise SetupRefused(f"cannot open the keys in {config.database_path}: "
                               f"{getattr(exc, 'strerror', None) or exc}; nothing was written"
                               ) from None
        try:
            key = store.generate(site["id"])
            try:
                file.write()
            except BaseException:
                store.revoke(site["id"])
                raise
            created = store.created_master
        finally:
            store.close()
        if created is not None:
            self.say(f"\nMade the master key {created} (mode 0600): it encrypts the site keys "
                     "in the database. Back it up apart from the database.")
        self.say(_handover(site, link, key.secret, relay_url, self.args.config))
        relay_host, site_host = urlsplit(relay_url).hostname, urlsplit(site["url"]).hostname
        if relay_host and site_host and is_loopback(relay_host) and not is_loopback(site_host):
            self.say(f"\nNote: {relay_url} is an address of this machine only; {site['url']} "
                     f"reaches it only if that WordPress runs here too. Otherwise set "
                     f"public_url in {self.args.config} to the relay's address as the site "
                     "reaches it (behind a reverse proxy with TLS: docs/operations.md), reload "
                     "the relay, and put that address in USERRELAY_URL.")

    def _public_url(self, config: Config) -> tuple[str, dict[str, Any]]:
        """The relay's address as the sites reach it: ``public_url``, asked (and written to
        the file) the first time; ``--public-url`` answers it. Returns it and the settings to
        write."""
        given = self.args.public_url
        if given is None and config.public_url:
            return config.relay_url, {}
        if self.prompt and given is None:
            self.say("The relay's public URL: the address the WordPress sites reach the relay "
                     "at (written as public_url). Behind a reverse proxy with TLS it is "
                     "https://relay.example.com (docs/operations.md); the listener's own "
                     f"address, {config.relay_url}, reaches it only from this machine.")
        if self.prompt is None and given is None:
            return config.relay_url, {}  # flags only: the listener, as before; nothing written
        url = self._answer("--public-url", given, "The relay's public URL", config.relay_url,
                           relay_url_problem).rstrip("/")
        # Written even when taken as offered: it is not asked again, and the file says where
        # the sites send to.
        return url, {"public_url": url}

    def _check_flags(self) -> None:
        args = self.args
        missing = [flag for flag, value in (("--id", args.id), ("--url", args.url))
                   if value is None]
        if args.remote is not None and args.direction is None:
            missing.append("--direction")
        if missing:
            raise SetupRefused(f"not on a terminal, so {' and '.join(missing)} must be given "
                               "(userrelay sites add --help lists every flag)")
        link_flags = ["--" + name.replace("_", "-") for name in wizard_link.FLAGS
                      if getattr(args, name) is not None]
        if args.remote is None and link_flags:
            raise SetupRefused(f"{', '.join(link_flags)}: only for a link, which needs "
                               "--remote SITE")

    def _answer(self, flag: str, given: str | None, question: str, default: str | None,
                check: Check) -> str:
        """A flag's value (refused if invalid), else the answer to ``question``."""
        if given is not None:
            problem = check(given)
            if problem:
                raise SetupRefused(f"{flag} {given!r}: {problem}")
            return given
        if self.prompt is None:
            assert default is not None, f"{flag} is checked for in _check_flags"
            problem = check(default)
            if problem:
                raise SetupRefused(f"{flag} (by default {default!r}): {problem}")
            return default
        return self.prompt.ask(question, default, check)

    def _site(self, config: Config, path: Path) -> dict[str, Any]:
        def check_id(site_id: str) -> str | None:
            if site_id in config.sites:
                known = config.sites[site_id]
                return (f"a site {site_id!r} already exists in {path} ({known.label}, "
                        f"{known.url}); choose another id")
            return site_problem("id", {"id": site_id})

        site_id = self._answer("--id", self.args.id, "Site id (lower-case letters, digits, "
                               "'-' or '_'; used in URLs and logs)", None, check_id)
        label = self._answer("--label", self.args.label, "Label, for people", site_id,
                             lambda text: site_problem("label", {"label": text}))
        url, allow_http = self._url()
        site: dict[str, Any] = {"id": site_id, "label": label, "url": url}
        if allow_http:
            site["allow_http"] = True
            self.say(f"Plain http allowed: {urlsplit(url).hostname} is a loopback address "
                     f"({LOOPBACK}).")
        return site

    def _url(self) -> tuple[str, bool]:
        url = self.args.url
        if url is not None:
            host = urlsplit(url).hostname
            if self.args.allow_http and host and not is_loopback(host):
                raise SetupRefused(f"--allow-http is accepted only for a site on this machine, "
                                   f"a loopback host ({LOOPBACK}); {host} is not one")
            problem = url_problem(url, self.args.allow_http)
            if problem:
                raise SetupRefused(f"--url {url!r}: {problem}")
            return url, urlsplit(url).scheme == "http"
        assert self.prompt is not None
        while True:
            url = self.prompt.ask("The WordPress site's address (https://…)", None,
                                  lambda text: url_problem(text, True))
            parts = urlsplit(url)
            if parts.scheme != "http":
                return url, False
            if self.prompt.confirm(f"{parts.hostname} is on this machine. Allow plain http "
                                   "for it?", False):
                return url, True
            self.say("  Then give its https:// address.")


def _summary(site: dict[str, Any], link: dict[str, Any] | None) -> str:
    lines = [f"\nSite {site['id']!r} ({site['label']}) at {site['url']}."]
    if link:
        flows = []
        if "outgoing" in link and link["direction"] != "pull":
            flows.append(f"{link['site']} sends {', '.join(link['outgoing']) or 'nothing'} "
                         f"to {link['remote']}")
        if "incoming" in link and link["direction"] != "push":
            flows.append(f"{link['site']} takes {', '.join(link['incoming']) or 'nothing'} "
                         f"from {link['remote']}")
        lines.append(f"Link {link['id']!r}: {', '.join(link['sync'])}, {link['direction']}: "
                     f"{'; '.join(flows)}; people matched by {link['match_by']}.")
        lines.append(f"Who and what it syncs: {wizard_link.rules_said(link)}.")
    return "\n".join(lines)


def _handover(site: dict[str, Any], link: dict[str, Any] | None, secret: str, relay_url: str,
              config: str) -> str:
    site_id = site["id"]
    flag = f" --config {config}"
    steps = [f"Paste the key into {site_id}, as above.",
             "Start the relay, or reload it if it runs: it reads its configuration only then.\n"
             f"       userrelay serve{flag}\n"
             "       systemctl reload userrelay   (under systemd; or restart it)",
             "Test the connection, both ways:\n" + "\n".join(
                 f"       userrelay sites test {s}{flag}"
                 for s in ([site_id, link["remote"]] if link else [site_id]))]
    if link:
        steps.append(f"Start the link:\n       userrelay links start {link['id']}{flag}"
                     + ("" if link.get("initial_sync", True) else
                        "\n     (initial_sync: false: only changes from then on travel)"))
    else:
        steps.append(f"Add the next site, and link it to {site_id}:\n"
                     f"       userrelay sites add{flag}")
    numbered = "\n".join(f"  {i}. {step}" for i, step in enumerate(steps, 1))
    added = f"site {site_id!r}" + (f" and link {link['id']!r}" if link else "")
    return (f"\nWrote {config}: {added}.\n\n"
            f"The API key of site {site_id!r}, shown only this once:\n\n    {secret}\n\n"
            f"Paste it into that WordPress site's wp-config.php:\n\n"
            f"    define( 'USERRELAY_URL', '{relay_url}' );\n"
            f"    define( 'USERRELAY_SITE', '{site_id}' );\n"
            f"    define( 'USERRELAY_KEY', '{secret}' );\n\n"
            f"or into Settings → UserRelay there (Relay URL, Site id at the relay, Key).\n\n"
            f"Next steps:\n{numbered}")
