"""Reading a configuration file's YAML the way people write it, with errors they can act on.

Owns the step from bytes to a plain document: the text must be UTF-8; a key given twice in
one mapping is an error naming both lines (PyYAML would silently keep the last); a syntax
error names its line and column and gives a plain hint; nesting past ``MAX_DEPTH`` is refused
before it can exhaust the parser. Every problem is a ``ConfigError``; nothing else escapes.
This module knows nothing of the settings themselves (that is ``relay.config``).
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from relay.errors import ConfigError

#: Deepest nesting of mappings and lists accepted; a real configuration needs 4.
MAX_DEPTH = 20


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line)
            except TypeError:
                continue  # an unhashable key: PyYAML's own message says so below
            if first != key_node.start_mark.line:
                raise _DuplicateKey(key, first + 1, key_node.start_mark.line + 1,
                                    key_node.start_mark.column + 1)
        return super().construct_mapping(node, deep)


class _DuplicateKey(Exception):
    def __init__(self, key: Any, first: int, again: int, column: int) -> None:
        super().__init__(key)
        self.key, self.first, self.again, self.column = key, first, again, column


#: What a parser's complaint usually means, in the words of someone editing the file.
_HINTS = (
    ("found character '\\t'", "YAML cannot be indented with tabs; indent with spaces"),
    ("expected <block end>", "a line is indented differently from the lines around it: check "
     "the indentation of this line and of the line above"),
    ("mapping values are not allowed", "a value holds ': ' or the line above is indented "
     "wrongly: put the value in quotes, or check the indentation of the line above"),
    ("could not find expected ':'", "a line has no 'key: value' form: check it and the "
     "indentation of the line above"),
    ("found unhashable key", "a key must be a plain word, not a list or a mapping"),
    ("while scanning a quoted scalar", "a quote is not closed"),
    ("found undefined alias", "a '*' starts a value: put the value in quotes"),
)
_DEFAULT_HINT = ("check the indentation of the line above, and put values holding ': ', "
                 "' #', '[' or '{' in quotes")


def parse(text: bytes | str, source: str) -> Any:
    """The document in ``text`` (None when it holds nothing); ``ConfigError`` otherwise."""
    if isinstance(text, bytes):
        text = decode(text, source)
    try:
        node = yaml.compose(text, Loader=_Loader)
    except RecursionError:
        raise ConfigError(source, [f"nested too deeply (more than {MAX_DEPTH} levels)"]) \
            from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, [syntax_problem(exc)]) from None
    if node is None:
        return None
    if _depth(node) > MAX_DEPTH:
        raise ConfigError(source, [f"nested too deeply (more than {MAX_DEPTH} levels)"])
    loader = _Loader(text)
    try:
        return loader.construct_document(node)
    except _DuplicateKey as dup:
        raise ConfigError(source, [
            f"line {dup.again}, column {dup.column}: the key {dup.key!r} is given twice in the "
            f"same mapping (lines {dup.first} and {dup.again}); YAML would silently keep only "
            "the second: merge them into one, or check the indentation"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, [syntax_problem(exc)]) from None
    except Exception as exc:  # noqa: BLE001 - only the bytes of the file can get here
        # A tagged value PyYAML's safe constructors cannot build (a malformed !!omap,
        # !!timestamp, …): they raise ValueError, TypeError, AttributeError and more.
        raise ConfigError(source, [f"a value cannot be read ({type(exc).__name__}: {exc}); "
                                   "check the values written with a '!!' tag or a date"]) \
            from None
    finally:
        loader.dispose()


def decode(raw: bytes, source: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[:exc.start]
        line = before.count(b"\n") + 1
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        raise ConfigError(source, [
            f"line {line}, column {column}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
            "save the file as UTF-8"]) from None


def syntax_problem(exc: yaml.YAMLError) -> str:
    """``not valid YAML at line L, column C: what; hint``."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = str(getattr(exc, "problem", None) or "invalid YAML")
    context = getattr(exc, "context", None)
    said = f"{problem} ({context})" if context else problem
    hint = next((h for key, h in _HINTS if key in f"{problem} {context}"), _DEFAULT_HINT)
    return f"not valid YAML{where}: {said}; {hint}"


def _depth(node: Node) -> int:
    """How deep ``node`` nests, without recursion (the composer has built it already)."""
    deepest, pending = 0, [(node, 1)]
    while pending:
        current, level = pending.pop()
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        if isinstance(current, MappingNode):
            pending.extend((child, level + 1) for pair in current.value for child in pair)
        elif isinstance(current, SequenceNode):
            pending.extend((child, level + 1) for child in current.value)
    return deepest
