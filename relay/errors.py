"""Every error the relay raises on purpose, each carrying the facts a user needs to act.

    UserRelayError
     +-- ConfigError           the configuration file is wrong (key path, value, expectation)
     +-- KeyStoreError         a site has no key, or the master key cannot open it
     +-- LinkNotReady          a link cannot start: names each site lacking a connection test
     +-- SetupRefused          `userrelay sites add` cannot do what was asked; says why
     +-- RequestRejected       an incoming request is refused; carries its HTTP status
     |    +-- UnknownSite        404
     |    +-- UnknownLink        404
     |    +-- BadSignature       401
     |    +-- ProtocolMismatch   400, the peer speaks another protocol version: names both
     |    +-- BodyTooLarge       413
     |    +-- BodyTooSlow        408, the body did not arrive in time
     |    +-- InvalidEvent       400, names the offending field
     |    +-- InvalidRequest     400, an admin request or command: names the bad field
     +-- StoreUnavailable      the database cannot be written: answer 503, acknowledge nothing
     +-- DatabaseUnusable      the database file cannot be opened at all: which path, why
     +-- SiteUnreadable        a site's users cannot be read for an initial sync: which, why
     +-- ReconcileFailed       a site could not be read for a reconciliation: which, why
"""

from __future__ import annotations


class UserRelayError(Exception):
    """Base of every error raised on purpose by the relay."""


class ConfigError(UserRelayError):
    """One or more problems in a configuration file; ``problems`` lists them all."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s) in the configuration:\n{lines}")


class KeyStoreError(UserRelayError):
    """A site's key is missing or cannot be decrypted."""


class LinkNotReady(UserRelayError):
    """A link cannot start: ``missing`` says, per site, which test it lacks and what to run."""

    def __init__(self, link: str, missing: list[str]) -> None:
        self.link = link
        self.missing = missing
        super().__init__(f"link {link!r} cannot start: {'; '.join(missing)}")


class SetupRefused(UserRelayError):
    """A guided set-up step is refused (an id in use, plain http to a remote host, …)."""


class RequestRejected(UserRelayError):
    """An incoming request is refused with ``status`` and a message safe to show the sender."""

    status = 400

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class UnknownSite(RequestRejected):
    status = 404


class UnknownLink(RequestRejected):
    status = 404


class BadSignature(RequestRejected):
    status = 401


class ProtocolMismatch(RequestRejected):
    """The request is of another protocol version than ours; the message names both."""

    status = 400


class BodyTooLarge(RequestRejected):
    status = 413


class BodyTooSlow(RequestRejected):
    status = 408


class InvalidEvent(RequestRejected):
    status = 400


class InvalidRequest(RequestRejected):
    """An admin API request or a ``userrelay dead`` command names a bad filter or value."""

    status = 400


class StoreUnavailable(UserRelayError):
    """The database refused a write; nothing of the request was acknowledged."""


class DatabaseUnusable(UserRelayError):
    """The database cannot be opened (its folder cannot be made, it is not an SQLite file,
    it is read-only, …): names the path, the reason and the setting."""


class SiteUnreadable(UserRelayError):
    """A page of a site's users could not be read for a link's initial sync; says which
    site, which URL and why (the sync tries again later from the same cursor)."""


class ReconcileFailed(UserRelayError):
    """A reconciliation could not read a site (unreachable, refused, or a bad answer)."""
