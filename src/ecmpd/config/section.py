"""The base of every config section: frozen, and unknown keys are errors."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A frozen config mapping that rejects keys it does not know."""

    # populate_by_name lets code build RuleConfig(from_=...) while YAML says `from`.
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


def none_as_empty(value: object) -> object:
    """Read an empty section (`check:` with every line commented out) as all defaults."""
    return {} if value is None else value
