"""The ``userrelay`` command: one module per group of verbs (serve, status, sites, links, dead
letters, reconciliation, removal, the set-up wizard).
"""
