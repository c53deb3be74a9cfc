"""``python -m pyrostore`` is the ``pyrostore`` command."""

from pyrostore.cli import main

raise SystemExit(main())
