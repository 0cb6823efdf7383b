"""The relay's SQLite database: the one writer and its schema, the delivery queue, identities
(who is who on each site), links' states and Test Connection results, initial-sync cursors,
reconciliation runs, dead letters and the status read from them.

Functions here run inside the writer's transaction or on a plain read connection. Must not import
``keys``, ``sites``, ``work``, ``web``, ``daemon`` or ``cli``.
"""
