"""The package's shape holds: sub-packages by stage, every import pointing down the layer order, small modules.

The order and the measure are in `tests/arch/layers.py` (`python -m tests.arch.layers` prints them)."""

from __future__ import annotations

import ast

from tests.arch import layers


def test_every_import_between_sub_packages_points_down_the_order():
    assert layers.violations() == []


def test_the_checker_sees_an_arrow_back_up_and_an_import_inside_a_function(tmp_path, monkeypatch):
    """The measure itself: an import from `store` up into `publish`, made inside a function, is found."""
    pkg = tmp_path / "handwatch"
    (pkg / "store").mkdir(parents=True)
    (pkg / "publish").mkdir()
    for p in (pkg / "__init__.py", pkg / "store" / "__init__.py", pkg / "publish" / "__init__.py"):
        p.write_text("")
    (pkg / "publish" / "output.py").write_text("from handwatch.store import state\n")
    (pkg / "store" / "state.py").write_text("def f():\n    from handwatch.publish.output import write\n")
    monkeypatch.setattr(layers, "PACKAGE", pkg)
    assert layers.violations() == ["handwatch/store/state.py:2: store -> publish (handwatch.publish.output)"]


def test_every_group_is_in_the_order_and_few_modules_sit_at_the_top():
    groups = {layers.group_of(layers.module_name(p)) for p in layers.modules()}
    for g in groups:
        layers.rank(g)  # raises for a sub-package nobody placed in the order
    top = [p for p in layers.PACKAGE.glob("*.py")]
    assert len(top) <= layers.MAX_TOP_LEVEL, sorted(p.name for p in top)


def test_no_module_is_over_the_size_limit():
    big = {
        str(p.relative_to(layers.PACKAGE)): n
        for p in layers.modules()
        if (n := len(p.read_text().splitlines())) > layers.MAX_LINES
    }
    assert big == {}


def test_every_sub_package_says_what_its_stage_does():
    """Each `__init__.py` opens with a docstring of at least a sentence, and does no work: nothing but the docstring."""
    for init in layers.PACKAGE.glob("*/__init__.py"):
        tree = ast.parse(init.read_text())
        doc = ast.get_docstring(tree)
        assert doc and len(doc) > 80, f"{init}: needs a paragraph on what the stage does"
        assert len(tree.body) == 1, f"{init}: an __init__ holds only its docstring (no work at import time)"
