"""The relay's HTTP side: the aiohttp application, ingest of signed site reports, the site view, the
admin API and console, metrics and the connection guard. Must not import ``daemon`` or ``cli``.
"""
