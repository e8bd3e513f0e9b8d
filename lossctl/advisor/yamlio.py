"""Safe YAML loading that remembers where each key was written.

Only ``yaml.SafeLoader`` is used, so tags such as ``!!python/object/apply`` are rejected before
anything is constructed. Mapping keys get their 1-based line recorded so that errors can say
``task.yaml:3``; duplicate keys are an error rather than a silent overwrite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lossctl.errors import UsageError


class Lines(dict):
    """A dict subclass for mappings read from YAML: ``.lines[key]`` is the key's line (1-based)."""

    lines: dict[Any, int]
    line: int

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lines = {}
        self.line = 0


# libyaml's parser when available (much faster); either way the constructor is SafeConstructor,
# which only builds plain mappings, lists, strings, numbers, booleans, dates and None.
_BASE = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _LineLoader(_BASE):  # type: ignore[misc, valid-type]
    """SafeLoader that builds :class:`Lines` mappings and refuses duplicate keys."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> Lines:
    loader.flatten_mapping(node)
    out = Lines()
    out.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "found an unhashable key", key_node.start_mark) from None
        if key in out:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = key_node.start_mark.line + 1
    return out


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: str | Path, what: str) -> Any:
    """Read one YAML document from ``path`` safely; every problem is a one-line UsageError."""
    from lossctl.userfiles import read_text

    p = Path(path)
    text = read_text(p, f"{what} {str(p)!r}", "a YAML file")
    try:
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - _LineLoader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
        problem = exc.problem or exc.context or "malformed YAML"
        if "python/" in str(problem) or "could not determine a constructor" in str(problem):
            problem = (f"{problem.strip()} (only plain YAML is allowed: mappings, lists, strings, "
                       "numbers and booleans; tags that build Python objects are refused)")
        raise UsageError(f"{where}: {what} is not valid YAML: {' '.join(str(problem).split())}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{p}: {what} is not valid YAML: {' '.join(str(exc).split())}") from None


def line_of(mapping: Any, key: Any) -> int | None:
    lines = getattr(mapping, "lines", None)
    if lines:
        return lines.get(key)
    return None
