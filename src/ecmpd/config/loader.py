"""Loading a config: YAML with lines -> schema -> cross-field checks -> resolved Config."""

from __future__ import annotations

import os

from pydantic import ValidationError

from ecmpd.config.fields import FROM_YAML
from ecmpd.config.issues import ConfigError, ConfigIssue, sort_issues
from ecmpd.config.messages import validation_issues
from ecmpd.config.resolve import resolve
from ecmpd.config.salvage import refused_paths, salvage, unrelated
from ecmpd.config.schema import Config
from ecmpd.config.semantic import semantic_findings
from ecmpd.config.yamlsource import line_for, read_yaml


def parse_config(text: str, filename: str = "<string>") -> Config:
    """A validated, resolved Config from YAML text; ConfigError lists every problem found."""
    source = read_yaml(text, filename)
    issues = list(source.issues)
    if source.data is None:
        raise ConfigError(sort_issues(issues))
    refused: list[str] = []
    checked: Config | None
    try:
        checked = Config.model_validate(source.data, context={FROM_YAML: True})
    except ValidationError as error:
        issues += validation_issues(error, Config, filename, source.lines)
        refused = refused_paths(error)
        # Cross-field checks need every field valid: run them on what validates.
        checked = salvage(source.data, error)
    for path, message in semantic_findings(checked) if checked is not None else ():
        if unrelated(path, refused):
            issues.append(ConfigIssue(filename, line_for(source.lines, path), path, message))
    if issues or checked is None or refused:
        raise ConfigError(sort_issues(issues))
    return resolve(checked).with_source(filename, source.lines)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and parse a config file; ConfigError when unreadable or invalid."""
    filename = os.fspath(path)
    try:
        with open(filename, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise ConfigError([ConfigIssue(filename, None, "", f"cannot read: {reason}")]) from None
    return parse_config(text, filename)
