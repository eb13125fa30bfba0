"""Entry point for `python -m handwatch`."""

from handwatch.cli.main import main

raise SystemExit(main())
