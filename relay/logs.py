"""Logging: structlog everywhere, JSON lines unless stderr is a terminal.

Standard-library loggers (aiohttp's among them) go through the same processors. As a last
line of defence, any string that looks like a site key or a password hash is masked before a
line is written, wherever it came from.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

_SECRET = re.compile(r"whsec_[A-Za-z0-9+/=]+|\$(?:P|H|wp|2y|2b|argon2id?)\$[^\s\"',]+")
MASK = "**********"


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return _SECRET.sub(MASK, value)
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask(v) for v in value]
    return value


def redact_secrets(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    return {k: _mask(v) for k, v in event_dict.items()}


def configure(level: str = "info", json_lines: bool | None = None) -> None:
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    renderer: Any = (structlog.processors.JSONRenderer() if json_lines
                     else structlog.dev.ConsoleRenderer())
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
    ))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
