"""The relay's background work: the courier that delivers queued changes, the initial sync of a new
link, reconciliation and its schedule, and the nudge that tells sites the relay is back.
Must not import ``web``, ``daemon`` or ``cli``.
"""
