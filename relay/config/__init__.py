"""The configuration: every setting declared once (relay/config/sections.py), loaded from YAML
and validated (relay/config/load.py), edited keeping its comments (relay/config/edit.py), and
checked one field at a time for the wizards (relay/config/checks.py). Also the rule of the meta
keys no link may sync (relay/config/protected_meta.py).

Knows nothing of the database or the network; imports only ``relay.errors`` and
``relay.constants``.
"""

from relay.config.load import (
    LEGACY_DATABASE,
    from_mapping,
    from_text_document,
    is_loopback,
    legacy_database,
    load,
)
from relay.config.sections import (
    DEFAULT_FILE,
    MASTER_KEY_CREDENTIAL,
    SETTINGS,
    Admin,
    Config,
    Delivery,
    Files,
    Ingest,
    InitialSync,
    Link,
    Listen,
    Setting,
    Site,
    default_database,
    default_file,
    parse_duration,
)

__all__ = [
    "DEFAULT_FILE", "LEGACY_DATABASE", "MASTER_KEY_CREDENTIAL", "SETTINGS", "Admin", "Config",
    "Delivery", "Files", "Ingest", "InitialSync", "Link", "Listen", "Setting", "Site",
    "default_database", "default_file", "from_mapping", "from_text_document", "is_loopback",
    "legacy_database", "load", "parse_duration",
]
