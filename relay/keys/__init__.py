"""Site keys: sealing them under the master key, the key store, and signing and checking
requests (Standard Webhooks, protocol 2).

Must not import ``sites``, ``work``, ``web``, ``daemon`` or ``cli``.
"""
