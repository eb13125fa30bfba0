"""The allocator setting the CLI makes: a second large page reuses the first one's memory."""

import subprocess
import sys

import pytest
from PIL import Image

PROBE = r"""
import pathlib, resource, sys
from handwatch.prepare import alloc
from handwatch.prepare import inputs
if sys.argv[2] == "keep":
    assert alloc.keep_image_buffers()
path = pathlib.Path(sys.argv[1])
inputs.load(path, 1288, 100, 50)  # the first page maps fresh memory either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    inputs.load(path, 1288, 100, 50)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 3)
"""


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    p = tmp_path_factory.mktemp("alloc") / "big.jpg"
    Image.effect_noise((4032, 3024), 40).convert("RGB").save(p, quality=90)
    return p


def faults(photo, mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, str(photo), mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_second_page_reuses_memory_instead_of_faulting_in_fresh_pages(photo):
    default, kept = faults(photo, "default"), faults(photo, "keep")
    # Measured: ~3,000 minor faults (9 MB of decoded pixels, page by page) against a few dozen.
    assert default > 1000, default
    assert kept < default / 4, (kept, default)
