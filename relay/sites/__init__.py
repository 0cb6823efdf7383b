"""Talking to partner sites: the one signed client for every call to a plugin (its paths, timeouts
and errors), Test Connection, and adding a site or a link. Must not import ``work``, ``web``,
``daemon`` or ``cli``.
"""
