"""Prepare the same-pixels check's pages (tests/support/benchpages.py) with whichever handwatch is first on
sys.path, and save each page's grey levels as PNG here. See PROVENANCE.md for the commit these came from.

    git worktree add /tmp/old ce98ca4
    PYTHONPATH=/tmp/old:. .venv/bin/python tests/data/prepared/make_references.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from PIL import Image

import handwatch
from tests.support import benchpages

HERE = Path(__file__).parent


def main() -> None:
    print("handwatch from", Path(handwatch.__file__).parent)
    with tempfile.TemporaryDirectory() as tmp:
        for name in benchpages.NAMES:
            grey = benchpages.prepared(name, Path(tmp))
            Image.fromarray(grey).save(HERE / f"{name}.png", optimize=True)
            print(name, grey.shape)


if __name__ == "__main__":
    main()
