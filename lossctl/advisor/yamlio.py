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


#: limits on a YAML document, checked on its node graph before anything is constructed: a
#: "billion laughs" of nested aliases, deep nesting or a 400-digit integer is refused, not expanded
MAX_YAML_CHARS = 1_000_000
MAX_YAML_NODES = 100_000  # nodes after alias expansion
MAX_YAML_DEPTH = 64
MAX_YAML_NUMBER_CHARS = 40
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"


def _check_limits(node: Any) -> str | None:
    """What is wrong with the node graph ``node`` (too deep, too large once aliases are expanded,
    a number too long), or None; iterative, and each shared (aliased) node is sized once."""
    sizes: dict[int, int] = {}
    stack: list[tuple[Any, int, bool]] = [(node, 1, False)]
    on_path: set[int] = set()
    while stack:
        n, depth, done = stack.pop()
        key = id(n)
        if done:
            on_path.discard(key)
            children = _children(n)
            sizes[key] = 1 + sum(sizes.get(id(c), 0) for c in children)
            if sizes[key] > MAX_YAML_NODES:
                return (f"the document is too large once its aliases are expanded (over {MAX_YAML_NODES} "
                        f"values, line {n.start_mark.line + 1})")
            continue
        if key in sizes:
            continue
        if depth > MAX_YAML_DEPTH:
            return f"values nested more than {MAX_YAML_DEPTH} deep (line {n.start_mark.line + 1})"
        if key in on_path:
            return f"a recursive alias (line {n.start_mark.line + 1})"
        if isinstance(n, yaml.ScalarNode):
            if n.tag in (_INT_TAG, _FLOAT_TAG) and len(n.value) > MAX_YAML_NUMBER_CHARS:
                return (f"a number over {MAX_YAML_NUMBER_CHARS} characters (line {n.start_mark.line + 1}); "
                        "quote it if it is text")
            sizes[key] = 1
            continue
        on_path.add(key)
        stack.append((n, depth, True))
        for c in _children(n):
            stack.append((c, depth + 1, False))
    return None


def _children(n: Any) -> list[Any]:
    if isinstance(n, yaml.MappingNode):
        return [x for pair in n.value for x in pair]
    if isinstance(n, yaml.SequenceNode):
        return list(n.value)
    return []


def parse_yaml(text: str, where: str, what: str) -> Any:
    """One YAML document from ``text`` (``where`` names it in errors), within the limits above;
    every problem is a one-line UsageError."""
    from lossctl.errors import cut

    if len(text) > MAX_YAML_CHARS:
        raise UsageError(f"{where}: {what} is too large ({len(text)} characters; at most {MAX_YAML_CHARS})")
    loader = _LineLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        problem = _check_limits(node)
        if problem is not None:
            raise UsageError(f"{where}: {what} is refused: {problem}")
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f"{where}:{mark.line + 1}" if mark is not None else where
        problem = cut(" ".join(str(exc.problem or exc.context or "malformed YAML").split()), 300)
        if "python/" in str(problem) or "could not determine a constructor" in str(problem):
            problem = (f"{problem.strip()} (only plain YAML is allowed: mappings, lists, strings, "
                       "numbers and booleans; tags that build Python objects are refused)")
        raise UsageError(f"{at}: {what} is not valid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{where}: {what} is not valid YAML: {cut(' '.join(str(exc).split()))}") from None
    except (ValueError, TypeError, OverflowError, IndexError, KeyError) as exc:  # a bad tagged value: !!float abc, !!int ""
        raise UsageError(f"{where}: {what} is not valid YAML: a tagged value does not fit its tag "
                         f"({cut(' '.join(str(exc).split()))})") from None
    finally:
        loader.dispose()


def load_yaml(path: str | Path, what: str) -> Any:
    """Read one YAML document from ``path`` safely; every problem is a one-line UsageError."""
    from lossctl.userfiles import read_text

    p = Path(path)
    text = read_text(p, f"{what} {str(p)!r}", "a YAML file")
    return parse_yaml(text, str(p), what)


def line_of(mapping: Any, key: Any) -> int | None:
    lines = getattr(mapping, "lines", None)
    if lines:
        return lines.get(key)
    return None
