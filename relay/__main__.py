"""``python -m relay`` is the ``userrelay`` command."""

from relay.cli import main

raise SystemExit(main())
