"""UserRelay: keeps the users of several WordPress sites in step.

The package is laid out along the path an event travels:
receive -> authenticate (signatures, keystore) -> validate (events) -> route (routing, identity)
-> store (store, queue) -> deliver (deliver, retry).
"""

__version__ = "0.1.0"
