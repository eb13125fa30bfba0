"""Entry point for `python -m handwatch`."""

from handwatch.cli import main

raise SystemExit(main())
