"""Reading YAML with line numbers: compose the node tree, map field paths to lines, then construct.

PyYAML's safe loader keeps marks only on nodes, so the tree is composed first, walked
once for a path -> line map (and duplicate keys, which PyYAML silently lets through),
and only then turned into plain Python values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import yaml

from ecmpd.config.issues import ConfigIssue

_FROM_FIELD = re.compile(r"\.from_(?=$|[.\[])")
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass
class YamlSource:
    """A parsed document: its value, the line of each field path, and what was wrong with it."""

    data: object = None
    lines: dict[str, int] = field(default_factory=dict)
    issues: list[ConfigIssue] = field(default_factory=list)


def line_for(lines: Mapping[str, int], path: str) -> int | None:
    """The line of a field path, else of its nearest parent that has one."""
    path = _FROM_FIELD.sub(".from", path)  # code names the field from_, YAML says from
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return None


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _walk(node: yaml.Node, path: str, source: YamlSource, filename: str, seen: set[int]) -> None:
    """Record the line of every key and list item below `node`, and any duplicate keys."""
    if id(node) in seen:  # an alias cycle (`&a [*a]`): construction reports it
        return
    seen = seen | {id(node)}
    if isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                # Keys are names: read `1:` or `yes:` as the text written, not as 1 or True,
                # so they meet "unknown key" like any other misspelling.
                key_node.tag = _STR_TAG
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            child = _child(path, key)
            if key in first_line and key != "<<":
                message = f"duplicate key; first given on line {first_line[key]}"
                source.issues.append(ConfigIssue(filename, line, child, message))
            else:
                first_line[key] = line
                source.lines[child] = line
            _walk(value_node, child, source, filename, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = f"{path}[{index}]"
            source.lines[child] = item.start_mark.line + 1
            _walk(item, child, source, filename, seen)


def _syntax_issue(error: yaml.YAMLError, filename: str) -> ConfigIssue:
    """One issue for a YAML error, at the line PyYAML points at."""
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        message = error.problem or error.context or "invalid YAML"
        line = mark.line + 1 if mark is not None else None
        return ConfigIssue(filename, line, "", f"invalid YAML: {message}")
    return ConfigIssue(filename, None, "", f"invalid YAML: {error}")


def read_yaml(text: str, filename: str) -> YamlSource:
    """Parse one YAML document with the safe loader, keeping line numbers."""
    source = YamlSource()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        source.issues.append(_syntax_issue(error, filename))
        return source
    if node is None:
        source.issues.append(ConfigIssue(filename, None, "", "the file is empty"))
        return source
    if not isinstance(node, yaml.MappingNode):
        kind = "a list" if isinstance(node, yaml.SequenceNode) else "a single value"
        message = f"expected a mapping of settings (uplinks: ...), got {kind}"
        source.issues.append(ConfigIssue(filename, node.start_mark.line + 1, "", message))
        return source
    _walk(node, "", source, filename, set())
    loader = yaml.SafeLoader("")
    try:
        source.data = loader.construct_document(node)
    except yaml.YAMLError as error:
        source.issues.append(_syntax_issue(error, filename))
    finally:
        loader.dispose()
    return source
