"""``python -m relay`` is the ``userrelay`` command."""

from relay.cli.main import main

raise SystemExit(main())
