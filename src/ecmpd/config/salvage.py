"""A schema-valid stand-in for a config with field errors, so cross-field checks run too.

The cross-field checks need every field valid. Rather than making a user fix field
errors first and only then see the next batch, the keys pydantic refused are dropped
(their defaults stand in) until the rest validates; findings about what was dropped
are left to the field errors already reported.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable

from pydantic import ValidationError

from ecmpd.config.fields import FROM_YAML
from ecmpd.config.messages import field_path
from ecmpd.config.schema import Config

_ENTRY = re.compile(r"^[^.\[]+(\[\d+\])?")
# Each round drops at least one key, and a document's errors rarely nest deeper.
MAX_ROUNDS = 8


def salvage(data: object, error: ValidationError) -> Config | None:
    """The config with every refused key dropped, or None when a required one was refused."""
    data = copy.deepcopy(data)
    for _ in range(MAX_ROUNDS):
        details = error.errors()
        # A required key cannot fall back to a default: nothing sound is left to check.
        if any(d["type"] == "missing" for d in details):
            return None
        if not all(_drop(data, tuple(d["loc"])) for d in details):
            return None
        try:
            return Config.model_validate(data, context={FROM_YAML: True})
        except ValidationError as again:
            error = again
    return None


def _drop(data: object, loc: tuple[int | str, ...]) -> bool:
    """Delete the deepest mapping key along `loc`; False when there is none."""
    holder: dict[object, object] | None = None
    key: object = None
    node = data
    for part in loc:
        if isinstance(node, dict):
            if part not in node:
                return holder is not None  # dropped already, for another error below it
            holder, key, node = node, part, node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            break  # a union's branch name below a value: the value goes
    if holder is None:
        return False
    holder.pop(key, None)
    return True


def unrelated(path: str, refused: Iterable[str]) -> bool:
    """Whether a finding lies outside every entry (uplink, rule, section) with a refused field.

    Within one entry the checks compare its fields (fwmask needs fwmark, a reset day
    needs a cap): with one of them dropped, the others' findings would be about a
    default the user never wrote.
    """
    return _entry(path) not in {_entry(bad) for bad in refused}


def _entry(path: str) -> str:
    """`uplinks[1]` of `uplinks[1].check.interval`; `balancer` of `balancer.table`."""
    match = _ENTRY.match(path)
    return match.group(0) if match else path


def refused_paths(error: ValidationError) -> list[str]:
    """The field paths pydantic refused."""
    return [field_path(tuple(d["loc"])) for d in error.errors()]
