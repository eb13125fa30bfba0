"""Reading a config or rule file's YAML: safely, bounded, and refusing what plain YAML would take silently."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from handwatch.errors import ConfigError


class RefusedYaml(Exception):
    """Valid YAML that handwatch will not take: a duplicate key, or merge keys that copy too much."""


MERGE_TAG = "tag:yaml.org,2002:merge"
MAX_MERGED = 10_000  # entries YAML merge keys may copy in one file; a real config merges a few dozen


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """A safe loader that refuses a key given twice in one mapping (plain YAML keeps the last silently) and
    merge keys that copy more than MAX_MERGED entries: `a1: &a1 {<<: [*a0, *a0]}`, repeated, doubles with each
    line, so a rule file of a few hundred bytes would otherwise take the daemon hours and all its memory."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._checked: set[int] = set()
        self._merged = 0

    def _check_unique(self, node) -> None:
        """The mapping as written, before a merge rewrites it; `<<` counts as a key, so two are a duplicate."""
        if id(node) in self._checked:
            return
        self._checked.add(id(node))
        seen: dict = {}
        for key_node, _value in node.value:
            key = "<<" if key_node.tag == MERGE_TAG else self.construct_object(key_node)
            try:
                hash(key)
            except TypeError:
                continue  # the base constructor reports unhashable keys itself
            if key in seen:
                raise RefusedYaml(f"line {key_node.start_mark.line + 1}: {key}: duplicate key (also on line {seen[key] + 1})")
            seen[key] = key_node.start_mark.line

    def flatten_mapping(self, node) -> None:  # called for every mapping, and for each mapping a merge brings in
        self._check_unique(node)
        before = len(node.value)
        super().flatten_mapping(node)
        self._merged += max(0, len(node.value) - before)
        if self._merged > MAX_MERGED:
            raise RefusedYaml(f"line {node.start_mark.line + 1}: merge keys copy more than {MAX_MERGED:,} entries")


MAX_NODES = 100_000  # values a document may hold once its aliases are expanded; a real one holds hundreds
MAX_DEPTH = 100  # nesting; a real one nests a few levels
MAX_CHARS = 4 << 20  # characters once expanded: a file is at most 1 MiB, and aliases may not multiply it much


class _BoundedLoader(_UniqueKeyLoader):
    """The rule files' loader, and for YAML that anyone may have written (a Markdown's front matter, rewritten
    by another device): every alias counts as the whole value it repeats, so ten lines of `&a [*b, *b, …]`
    cannot become a billion values (each consumer that walks them — JSON, the index, a page — would take
    hours and gigabytes), and nesting is bounded before anything is built."""

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _budget(node)
        return node


def _budget(root) -> None:
    """Expanded size (values and characters) and depth of a composed node graph, in one pass over its
    distinct nodes (no recursion). Characters count too: one alias of a long string is one value, but
    10,000 of them are 400 MB once anything renders them."""
    size: dict[int, tuple[int, int]] = {}
    stack = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        if depth > MAX_DEPTH:
            raise RefusedYaml(f"line {node.start_mark.line + 1}: nested more than {MAX_DEPTH} levels deep")
        children = _children(node)
        if done:
            own = len(node.value) if isinstance(node, yaml.ScalarNode) else 0
            values = 1 + sum(size[id(c)][0] for c in children)
            chars = own + sum(size[id(c)][1] for c in children)
            if values > MAX_NODES:
                raise RefusedYaml(
                    f"line {node.start_mark.line + 1}: more than {MAX_NODES:,} values once its aliases are expanded"
                )
            if chars > MAX_CHARS:
                raise RefusedYaml(
                    f"line {node.start_mark.line + 1}: more than {MAX_CHARS:,} characters once its aliases are expanded"
                )
            size[id(node)] = (values, chars)
            continue
        if id(node) in size:
            continue
        stack.append((node, depth, True))
        stack.extend((c, depth + 1, False) for c in children if id(c) not in size)


def _children(node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [x for pair in node.value for x in pair]
    return []


def load_untrusted(text: str) -> Any:
    """YAML from a file anyone may have written: safe, bounded in size, aliases, merges and depth.
    Raises RefusedYaml or yaml.YAMLError; never hangs, never a RecursionError."""
    if len(text) > MAX_YAML_BYTES:
        raise RefusedYaml(f"more than {MAX_YAML_BYTES:,} characters")
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a safe loader with bounds
    except RecursionError:
        raise RefusedYaml(f"nested more than {MAX_DEPTH} levels deep") from None


MAX_YAML_BYTES = 1 << 20  # a config or rule file is a few KB; anything this large is not one


def read_yaml(path: Path, untrusted: bool = False) -> Any:
    """Parse a YAML file; every failure, whatever raised it, is a ConfigError naming the file.

    `untrusted` (rule files in watched folders): the file must be a regular file — opened without
    blocking, so a FIFO cannot hang the daemon — not a symbolic link, and at most 1 MiB."""
    from handwatch import safefs

    try:
        raw = safefs.read_regular(path, MAX_YAML_BYTES, follow=not untrusted)
        text = raw.decode("utf-8")
    except OSError as e:
        raise ConfigError(str(path), [f"cannot read: {e.strerror or e}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), ["not UTF-8 text"]) from None
    try:
        data = yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a safe loader with bounds
    except RefusedYaml as e:
        raise ConfigError(str(path), [str(e)]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise ConfigError(str(path), [f"{where}invalid YAML ({getattr(e, 'problem', None) or e})"]) from None
    except RecursionError:
        raise ConfigError(str(path), ["invalid YAML (nested too deeply)"]) from None
    except Exception as e:  # e.g. ValueError for an integer of 5,000 digits: still the file's fault
        raise ConfigError(str(path), [f"invalid YAML ({type(e).__name__}: {str(e)[:200]})"]) from None
    return {} if data is None else data
