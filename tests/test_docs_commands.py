"""The docs agree with the program: every ``userrelay`` command shown in README.md and docs/*.md
parses with the real command line (the same parser ``userrelay`` runs).

A command in a code block must parse as written (placeholders such as SITE stand for a value);
one named inline in a sentence may leave out its required arguments (`` `userrelay sites
test` `` names the command), but every word and flag it shows must exist. ``a|b|c`` stands for
each of a, b and c.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from relay.cli import main as cli

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^ *```[^\n]*\n(.*?)^ *```", re.DOTALL | re.MULTILINE)
_INLINE = re.compile(r"`([^`\n]*(?:\n[^`\n]*)?)`")
_PREFIX = re.compile(r"^(?:sudo -u \S+ )?(?:\S*/)?userrelay ")


def commands(text: str) -> list[tuple[str, bool]]:
    """(command, from a code block) for each ``userrelay`` command in a Markdown text."""
    found: list[tuple[str, bool]] = []
    for block in _FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            for part in re.split(r"&&|;|\|\|", line.split(" #")[0]):
                part = part.strip()
                if _PREFIX.match(part):
                    found.append((part, True))
    prose = _FENCE.sub("", text)
    for span in _INLINE.findall(prose):
        span = " ".join(span.split())
        if _PREFIX.match(span):
            found.append((span, False))
    return found


#: Placeholders of a value that must be a number (or a time), as a reader would fill them in.
VALUES = {"N": "10", "MINUTES": "30", "DELIVERY": "1", "WHEN": "2h"}


def expand(command: str) -> list[list[str]]:
    """The argument lists of ``command``: ``a|b`` alternatives expanded; a synopsis's
    ``[optional parts]`` given, its ``(remarks)`` and ``…`` left out; numeric placeholders
    filled in."""
    synopsis = re.sub(r"\([^)]*\)", "", _PREFIX.sub("", command)).replace("[", "").replace("]", "")
    words = [VALUES.get(w, w) for w in shlex.split(synopsis) if w not in ("…", "...")]
    lists: list[list[str]] = [[]]
    for word in words:
        options = word.split("|") if re.fullmatch(r"[a-z-]+(\|[a-z-]+)+", word) else [word]
        lists = [[*done, option] for done in lists for option in options]
    return lists


CASES = [(path.relative_to(ROOT).as_posix(), command, block)
         for path in DOCS for command, block in commands(path.read_text(encoding="utf-8"))]


def test_the_docs_show_commands_at_all() -> None:
    assert len(CASES) > 30
    assert any(c == "README.md" for c, _, _ in CASES)


@pytest.mark.parametrize(("doc", "command", "block"), CASES,
                         ids=[f"{d}: {c}" for d, c, _ in CASES])
def test_each_command_in_the_docs_parses_with_the_real_cli(doc: str, command: str,
                                                             block: bool) -> None:
    for argv in expand(command):
        error = io.StringIO()
        with contextlib.redirect_stderr(error), contextlib.redirect_stdout(io.StringIO()):
            try:
                cli._parser().parse_args(argv)
            except SystemExit as exc:
                if exc.code == 0:  # --help, --version
                    continue
                message = error.getvalue().strip().splitlines()[-1]
                named_only = not block and "the following arguments are required" in message
                assert named_only, f"{doc}: {command!r}: {message}"


def test_after_the_readmes_install_step_userrelay_runs_as_the_readme_writes_it() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    install = readme[readme.index("1. Install:"):readme.index("2. Add the first site.")]
    steps = [line.strip() for block in _FENCE.findall(install) for line in block.splitlines()
             if line.strip()]
    venv = Path(sys.prefix)  # the suite runs in the virtualenv `make` made (.venv)
    script = "\n".join(step.replace(".venv/", f"{venv}/") for step in steps)

    ran = subprocess.run(["bash", "-c", f"{script}\nuserrelay --version"], cwd=ROOT,
                         env={k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
                         | {"PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                         timeout=60, check=False)

    assert [". .venv/bin/activate"] == steps
    assert 0 == ran.returncode, ran.stderr
    assert ran.stdout.startswith("userrelay ")
