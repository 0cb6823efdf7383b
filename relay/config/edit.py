"""Editing the configuration file in place: add a site or a link, keeping comments and layout.

The file is read in ruamel.yaml's round-trip mode, so its comments, key order, quoting and
indentation survive; the edited text is validated exactly as the relay will read it (PyYAML and
``config.from_mapping``) before anything is written, and the write is atomic (a temporary file
beside it, then ``os.replace``) and keeps the file's mode and owner. A file that does not exist
starts from a small commented template. This module asks no questions and prints nothing.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import SingleQuotedScalarString
from ruamel.yaml.tokens import CommentToken
from ruamel.yaml.util import load_yaml_guess_indent

from relay import config as config_module
from relay.config import Config
from relay.config import yaml_doc as config_yaml
from relay.errors import SetupRefused

TEMPLATE = """\
# UserRelay configuration, started by `userrelay sites add`.
# Every setting and its default is listed in docs/configuration.md;
# `userrelay check-config FILE` validates this file.

listen:
  host: 127.0.0.1        # the public listener; sites POST their events here
  port: 8480

# The SQLite file with the queue, identities and (encrypted) site keys; relative paths
# are relative to this file. Each configuration has its own.
database: {database}
"""

#: The comment above a ``sites`` or ``links`` list added to a file that had none.
_ABOUT = {
    "sites": "The WordPress sites; each has one API key (kept encrypted in the database).",
    "links": "What each site sends to or takes from a remote site (see docs/configuration.md).",
    "public_url": "The relay's address as the WordPress sites reach it (their USERRELAY_URL).",
}
_NESTED_KEY = re.compile(r"^[^\s#-][^#]*:\s*(#.*)?$")


class ConfigFile:
    """One configuration file, read once; ``add`` edits the text, ``write`` saves it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.exists = path.exists()
        if not self.exists and not path.parent.is_dir():
            raise SetupRefused(f"cannot create {path}: the folder {path.parent} does not exist")
        try:
            self.original = path.read_text(encoding="utf-8") if self.exists else ""
        except OSError as exc:
            raise SetupRefused(f"cannot read {path}: {exc.strerror}") from None
        # A new or empty file starts from the template.
        self.text = self.original if self.original.strip() else \
            TEMPLATE.format(database=config_module.default_database(str(path)))
        #: The configuration as the relay reads it now; an invalid file is refused here.
        self.config = self.validate(self.text)

    def validate(self, text: str) -> Config:
        """``text`` read as the relay reads a file; raises ``ConfigError`` naming every problem."""
        document = config_yaml.parse(text, str(self.path))
        return config_module.from_text_document(document, source=str(self.path),
                                                base_dir=self.path.resolve().parent)

    def add(self, site: dict[str, Any] | None = None, link: dict[str, Any] | None = None,
            settings: dict[str, Any] | None = None) -> None:
        """Append ``site`` to ``sites`` and ``link`` to ``links``, and set top-level
        ``settings`` (a new one at the end); validates the result."""
        yaml_rt = _round_trip(self.text)
        try:
            document = yaml_rt.load(self.text)
        except YAMLError as exc:
            raise SetupRefused(f"cannot edit {self.path}: {exc}") from None
        if document is None:
            document = CommentedMap()
        for key, value in (settings or {}).items():
            if key in document:
                document[key] = _plain(value)
            else:  # at the end: a comment above another key stays with that key
                document[key] = _plain(value)
                if key in _ABOUT:
                    document.yaml_set_comment_before_after_key(key, before="\n" + _ABOUT[key])
        for key, item in (("sites", site), ("links", link)):
            if item is not None:
                _append(document, key, _mapping(item))
        buffer = io.StringIO()
        yaml_rt.dump(document, buffer)
        text = buffer.getvalue()
        if not _keeps_every_line(self.text, text):
            raise SetupRefused(
                f"cannot add to {self.path} without changing its existing lines; add this "
                f"by hand instead:\n\n{snippet(site, link)}")
        self.validate(text)
        self.text = text

    def remove(self, key: str, item_id: str) -> None:
        """Take the item ``item_id`` out of the ``key`` list (sites or links), keeping every
        other line and comment; validates the result."""
        document = self._load_round_trip()
        sequence = document.get(key) if document is not None else None
        index = next((i for i, item in enumerate(sequence or [])
                      if isinstance(item, dict) and item.get("id") == item_id), None)
        if sequence is None or index is None:
            raise SetupRefused(f"{self.path} has no {key[:-1]} {item_id!r}")
        del sequence[index]
        if not sequence:
            del document[key]
        self._dump(document)

    def edit(self, key: str, item_id: str, changes: dict[str, Any]) -> None:
        """Set ``changes`` on the item ``item_id`` of the ``key`` list, keeping comments;
        a value of None removes that key (its default applies); validates the result."""
        document = self._load_round_trip()
        item = next((item for item in (document or {}).get(key) or []
                     if isinstance(item, dict) and item.get("id") == item_id), None)
        if item is None:
            raise SetupRefused(f"{self.path} has no {key[:-1]} {item_id!r}")
        for name, value in changes.items():
            if value is None:
                item.pop(name, None)
            else:
                item[name] = _plain(value)
        self._dump(document)

    def _load_round_trip(self) -> Any:
        self._yaml = _round_trip(self.text)
        try:
            return self._yaml.load(self.text)
        except YAMLError as exc:
            raise SetupRefused(f"cannot edit {self.path}: {exc}") from None

    def _dump(self, document: Any) -> None:
        buffer = io.StringIO()
        self._yaml.dump(document, buffer)
        text = buffer.getvalue()
        self.validate(text)
        self.text = text

    def write(self) -> None:
        """Save the edited text atomically, keeping the file's mode and owner."""
        try:
            now = self.path.read_text(encoding="utf-8") if self.path.exists() else None
        except OSError as exc:
            raise SetupRefused(f"cannot read {self.path}: {exc.strerror}") from None
        if now != (self.original if self.exists else None):
            raise SetupRefused(f"{self.path} changed while the questions were asked; "
                               "nothing was written, run the command again")
        try:
            _write_atomically(self.path, self.text)
        except OSError as exc:
            raise SetupRefused(f"cannot write {self.path}: {exc.strerror}") from None


def snippet(site: dict[str, Any] | None, link: dict[str, Any] | None) -> str:
    """The YAML of a new site and link, for adding by hand."""
    parts = []
    for key, item in (("sites", site), ("links", link)):
        if item is not None:
            parts.append(yaml.safe_dump({key: [item]}, sort_keys=False,
                                        default_flow_style=None).rstrip())
    return "\n".join(parts)


def _round_trip(text: str) -> YAML:
    yaml_rt = YAML()  # round-trip mode
    yaml_rt.preserve_quotes = True
    yaml_rt.width = 4096  # never re-wrap a long line
    mapping = _mapping_indent(text)
    _, sequence, offset = load_yaml_guess_indent(text)
    if offset is None:  # no block sequence yet: nest them as the example does
        sequence, offset = mapping + 2, 2
    yaml_rt.indent(mapping=mapping, sequence=sequence, offset=offset)
    return yaml_rt


def _mapping_indent(text: str) -> int:
    """Indent of the first nested mapping key (``listen:`` then ``  host: …``), else 2."""
    lines = [line for line in text.splitlines() if line.strip() and
             not line.lstrip().startswith("#")]
    for line, after in itertools.pairwise(lines):
        if _NESTED_KEY.match(line) and not after.lstrip().startswith("-"):
            indent = len(after) - len(after.lstrip(" "))
            if indent > 0:
                return indent
    return 2


def _plain(value: Any) -> Any:
    """A string that YAML 1.1 (PyYAML) would read as something else is written quoted."""
    if isinstance(value, str) and yaml.safe_load(value + "\n") != value:
        return SingleQuotedScalarString(value)
    if isinstance(value, list):
        sequence = CommentedSeq(_plain(v) for v in value)
        sequence.fa.set_flow_style()
        return sequence
    return value


def _mapping(item: dict[str, Any]) -> CommentedMap:
    return CommentedMap((key, _plain(value)) for key, value in item.items())


def _append(document: CommentedMap, key: str, item: CommentedMap) -> None:
    sequence = document.get(key)
    if not isinstance(sequence, CommentedSeq):
        new_key = key not in document
        document[key] = CommentedSeq([item])
        if new_key:
            document.yaml_set_comment_before_after_key(key, before="\n" + _ABOUT[key])
        return
    if sequence and isinstance(sequence[-1], CommentedMap) and sequence[-1].fa.flow_style():
        item.fa.set_flow_style()  # items written `- {id: …}` stay so
    _move_trailing_lines(sequence, item)
    sequence.append(item)


def _tail(node: Any) -> tuple[Any, Any, int] | None:
    """Where the comment after the last scalar of ``node`` is kept: (holder, key, slot)."""
    while True:
        if isinstance(node, CommentedMap) and node:
            key: Any = list(node)[-1]
            slot = 2
        elif isinstance(node, CommentedSeq) and node:
            key, slot = len(node) - 1, 0
        else:
            return None
        child = node[key]
        if isinstance(child, CommentedMap | CommentedSeq) and child and \
                not child.fa.flow_style():
            node = child
            continue
        return node, key, slot


def _move_trailing_lines(sequence: CommentedSeq, item: CommentedMap) -> None:
    """Blank lines and comments after a list's last item stay after the item appended.

    ruamel keeps them on the last scalar of the last item, with that line's own end-of-line
    comment; the first line stays there and the rest moves to the new last item.
    """
    old = _tail(sequence)
    new = _tail(item)
    if old is None or new is None:
        return
    holder, key, slot = old
    entry = holder.ca.items.get(key)
    token = entry[slot] if entry and len(entry) > slot else None
    if not isinstance(token, CommentToken):
        return
    first, _, rest = token.value.partition("\n")
    if not rest:
        return
    if first:
        token.value = first + "\n"
    else:
        entry[slot] = None
    new_holder, new_key, new_slot = new
    new_entry = new_holder.ca.items.setdefault(new_key, [None, None, None, None])
    new_entry[new_slot] = CommentToken("\n" + rest, token.start_mark, None)


def _keeps_every_line(before: str, after: str) -> bool:
    """Every non-blank line of ``before`` is in ``after``, in order (spacing aside)."""
    remaining = iter(" ".join(line.split()) for line in after.splitlines())
    return all(any(line == candidate for candidate in remaining)
               for line in (" ".join(raw.split()) for raw in before.splitlines()) if line)


def _write_atomically(path: Path, text: str) -> None:
    path = path.resolve()
    try:
        st = os.stat(path)
        mode, owner = st.st_mode & 0o7777, (st.st_uid, st.st_gid)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode, owner = 0o666 & ~umask, None
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        if owner is not None and owner != (os.getuid(), os.getgid()):
            with contextlib.suppress(PermissionError):  # not ours to give away; mode kept
                os.chown(temporary, *owner)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
