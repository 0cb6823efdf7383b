"""Named values of the domain and of the wire format; defaults of settings live in ``config``."""

from __future__ import annotations

#: The six actions a link can allow, in the order they are shown to users.
ACTIONS = ("create", "edit", "delete", "password", "roles", "metadata")
#: What a link allows when it names no actions: the recommended set.
RECOMMENDED_ACTIONS = ("create", "edit", "roles")
#: The fields a link's ``fields`` may name: the profile fields a site admin chooses from, and
#: email (left out, it still travels to find the person, and is kept on the target).
LINK_FIELDS = ("first_name", "last_name", "nickname", "display_name", "url", "description",
               "locale", "email")
#: Actions that change an existing user and that a later delete makes pointless.
UPDATE_ACTIONS = frozenset({"edit", "password", "roles", "metadata"})

DIRECTIONS = ("push", "pull", "bidirectional")
SYNC_TYPES_SUPPORTED = ("users",)
SYNC_TYPES_PLANNED = ("orders", "posts")
MATCH_BY = ("email", "login")

#: The protocol version spoken here, sent in the ``userrelay-protocol`` header both ways.
PROTOCOL = 2
#: Where the plugin's routes live, relative to a site's URL.
PLUGIN_BASE = "/wp-json/userrelay/v1"

#: Standard Webhooks secret prefix; the rest is base64 of the key bytes.
KEY_PREFIX = "whsec_"
KEY_BYTES = 32
#: Incoming requests whose timestamp is further than this from our clock are refused.
TIMESTAMP_TOLERANCE_SECONDS = 300

#: States of a delivery (one event for one target site).
#: waiting: queued behind an earlier delivery of the same person to the same target;
#: ready: the head of its person's line, due at ``run_at``; leased: being sent;
#: done / dead (dead letter) / superseded (cancelled by a later delete): final.
WAITING, READY, LEASED, DONE, DEAD, SUPERSEDED = (
    "waiting",
    "ready",
    "leased",
    "done",
    "dead",
    "superseded",
)
PENDING_STATES = (WAITING, READY, LEASED)

#: HTTP statuses after which a delivery is tried again later.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Whole-request statuses that say the target is misconfigured, not the events: pause the link.
PAUSE_STATUSES = frozenset({401, 403, 404, 410})
