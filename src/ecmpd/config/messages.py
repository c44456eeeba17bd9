"""Pydantic's validation errors rewritten as short, human ConfigIssues with YAML field paths."""

from __future__ import annotations

import re
import typing
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from ecmpd.config.fields import SubfieldError
from ecmpd.config.issues import ConfigIssue, did_you_mean
from ecmpd.config.units import show
from ecmpd.config.yamlsource import line_for

Loc = tuple[int | str, ...]


def field_path(loc: Loc) -> str:
    """`uplinks[1].check.interval` from pydantic's ('uplinks', 1, 'check', 'interval')."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else ("." if path else "") + str(part)
    return path


def _section(annotation: Any) -> type[BaseModel] | None:
    """The config section class inside an annotation like `list[UplinkConfig] | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _section(arg)
        if found is not None:
            return found
    return None


def _keys(model: type[BaseModel]) -> list[str]:
    """The YAML keys a section accepts (`from`, not `from_`)."""
    return [
        info.validation_alias if isinstance(info.validation_alias, str) else name
        for name, info in model.model_fields.items()
    ]


def _section_at(root: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The section class that holds the mapping at `loc` (list indices skipped)."""
    model: type[BaseModel] | None = root
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        fields = dict(zip(_keys(model), model.model_fields.values(), strict=True))
        info = fields.get(part)
        model = _section(info.annotation) if info is not None else None
    return model


def _unknown_key(root: type[BaseModel], loc: Loc) -> str:
    """`unknown key; did you mean 'gateway'?`, or the valid keys when none is close."""
    model = _section_at(root, loc[:-1])
    if model is None:
        return "unknown key"
    keys = _keys(model)
    hint = did_you_mean(str(loc[-1]), keys)
    return "unknown key" + (hint or f" (valid keys: {', '.join(keys)})")


def _choices(error: ErrorDetails) -> str:
    """`must be one of: host, router (got 'hots')` from an enum or literal error."""
    expected = str((error.get("ctx") or {}).get("expected", ""))
    options = ", ".join(re.findall(r"'([^']*)'", expected)) or expected
    return f"must be one of: {options} (got {show(error['input'])})"


def _expected(what: str) -> Callable[[ErrorDetails], str]:
    return lambda error: f"expected {what}, got {show(error['input'])}"


def _too_short(error: ErrorDetails) -> str:
    minimum = (error.get("ctx") or {}).get("min_length", 1)
    return "must not be empty" if minimum == 1 else f"needs at least {minimum} entries"


_MESSAGES: Mapping[str, Callable[[ErrorDetails], str]] = {
    "missing": lambda _: "required",
    "int_type": _expected("an integer"),
    "int_parsing": _expected("an integer"),
    "int_from_float": _expected("an integer"),
    "float_type": _expected("a number"),
    "float_parsing": _expected("a number"),
    "bool_type": _expected("true or false"),
    "bool_parsing": _expected("true or false"),
    "string_type": _expected("a string"),
    "path_type": _expected("a path"),
    "list_type": _expected("a list"),
    "tuple_type": _expected("a list"),
    "model_type": _expected("a mapping"),
    "model_attributes_type": _expected("a mapping"),
    "dict_type": _expected("a mapping"),
    "dataclass_type": _expected("a mapping"),
    "enum": _choices,
    "literal_error": _choices,
    "too_short": _too_short,
}


def _message(error: ErrorDetails) -> tuple[Loc, str]:
    """The (possibly deeper) location and the human message of one pydantic error."""
    loc: Loc = tuple(error["loc"])
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, SubfieldError):
        return (*loc, *cause.sub), str(cause)
    if isinstance(cause, ValueError):
        return loc, str(cause)
    rewrite = _MESSAGES.get(error["type"])
    if rewrite is not None:
        return loc, rewrite(error)
    text = error["msg"]
    return loc, text[:1].lower() + text[1:]


def validation_issues(
    error: ValidationError,
    root: type[BaseModel],
    filename: str,
    lines: Mapping[str, int],
) -> list[ConfigIssue]:
    """One ConfigIssue per pydantic error, at the line of the field it is about."""
    issues = []
    for details in error.errors():
        loc, message = _message(details)
        if details["type"] == "extra_forbidden":
            message = _unknown_key(root, loc)
        path = field_path(loc)
        issues.append(ConfigIssue(filename, line_for(lines, path), path, message))
    return issues
