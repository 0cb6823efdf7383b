"""The domain, with no I/O: events and their envelope, routing by a link's rules and direction,
field versions, retry schedules, and how a partner's answer is read.

Imports only ``relay.config``, ``relay.errors`` and ``relay.constants``; never a database, a
socket, aiohttp or the clock-driven workers (the import contract in pyproject.toml says so).
"""
