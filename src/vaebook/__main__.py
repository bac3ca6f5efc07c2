"""``python -m vaebook``: see `vaebook.cli`."""

from .cli import main

raise SystemExit(main())
