"""The package's layers, measured from its imports: which sub-package imports which, and which arrows break the order.

`python -m tests.arch.layers` prints the measure (modules per sub-package, lines, the arrows between
sub-packages with how many imports make each); `tests/arch/test_layers.py` fails on an arrow against the order."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "handwatch"

# From the top down; an import may only point to a group further down this list. Groups in one tuple
# are siblings: neither may import the other.
ORDER: list[tuple[str, ...]] = [
    ("__main__",),
    ("cli",),
    ("service",),
    ("web",),
    ("publish",),
    ("transcribe", "intake"),
    ("prepare",),
    ("config", "store"),
    ("foundation",),
]
FOUNDATION = {"errors", "log", "safefs", "metrics", "__init__"}
MAX_TOP_LEVEL = 10
MAX_LINES = 450


def group_of(module: str) -> str:
    """`handwatch.publish.output` -> publish; `handwatch.log` -> foundation."""
    parts = module.split(".")
    if parts[0] != "handwatch":
        raise ValueError(module)
    if len(parts) == 1:
        return "foundation"
    head = parts[1]
    if head == "__main__":
        return "__main__"
    if head in FOUNDATION:
        return "foundation"
    return head


def rank(group: str) -> int:
    for i, tier in enumerate(ORDER):
        if group in tier:
            return i
    raise KeyError(f"{group}: not in the layer order (tests/arch/layers.py ORDER)")


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[str, int]]:
    """Every handwatch module `path` imports, with the line: top level and inside functions alike."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "handwatch"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "handwatch":
                continue
            if node.module == "handwatch":  # from handwatch import log, __version__
                for a in node.names:
                    sub = PACKAGE / a.name
                    is_module = sub.is_dir() or sub.with_suffix(".py").exists()
                    found.append((f"handwatch.{a.name}" if is_module else "handwatch", node.lineno))
            else:
                found.append((node.module, node.lineno))
    return found


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def arrows() -> Counter[tuple[str, str]]:
    """(from group, to group) -> number of imports, between different groups only."""
    count: Counter[tuple[str, str]] = Counter()
    for path in modules():
        src = group_of(module_name(path))
        for target, _line in imports_of(path):
            dst = group_of(target)
            if dst != src:
                count[(src, dst)] += 1
    return count


def violations() -> list[str]:
    """Each import that points up the order or sideways between siblings, as `file:line: a -> b`."""
    bad = []
    for path in modules():
        src = group_of(module_name(path))
        for target, line in imports_of(path):
            dst = group_of(target)
            if dst != src and rank(dst) <= rank(src):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {src} -> {dst} ({target})")
    return bad


def main() -> None:
    per_group: dict[str, list[Path]] = {}
    for path in modules():
        per_group.setdefault(group_of(module_name(path)), []).append(path)
    print(f"{'sub-package':12} {'modules':>7} {'lines':>6}  largest")
    for tier in ORDER:
        for group in tier:
            paths = [p for p in per_group.get(group, []) if p.name != "__init__.py" or group == "foundation"]
            if not paths:
                continue
            lines = {p: len(p.read_text().splitlines()) for p in paths}
            big = max(lines, key=lines.__getitem__)
            print(f"{group:12} {len(paths):>7} {sum(lines.values()):>6}  {big.name} ({lines[big]})")
    print("\narrows between sub-packages (imports counted, functions' own imports included):")
    by_src: dict[str, list[str]] = {}
    for (src, dst), n in sorted(arrows().items(), key=lambda kv: (rank(kv[0][0]), rank(kv[0][1]))):
        by_src.setdefault(src, []).append(f"{dst} ({n})")
    for src, dsts in by_src.items():
        print(f"  {src} -> {', '.join(dsts)}")
    bad = violations()
    print(f"\narrows against the order: {len(bad)}")
    for b in bad:
        print("  " + b)


if __name__ == "__main__":
    main()
