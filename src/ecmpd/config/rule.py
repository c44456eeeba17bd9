"""Schema of one user policy rule."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from ecmpd.config.enums import RuleActionName
from ecmpd.config.fields import (
    FwMark,
    IfName,
    Mark,
    Network,
    Ports,
    Protocol,
    RuleName,
    UplinkNames,
)
from ecmpd.config.section import Section
from ecmpd.config.units import split_mark


class RuleConfig(Section):
    """A match (all keys ANDed) and what to do with the traffic it matches."""

    name: RuleName
    action: RuleActionName
    from_: Network | None = Field(default=None, validation_alias="from", serialization_alias="from")
    to: Network | None = None
    iif: IfName | None = None
    fwmark: FwMark | None = None
    fwmask: Mark | None = None
    proto: Protocol | None = None
    dport: Ports | None = None
    sport: Ports | None = None
    # pin only: the uplink, or an ordered fallback list (the first in service carries).
    uplink: UplinkNames | None = None
    strict: bool = False  # pin only: unreachable rather than fall through while none is up

    @model_validator(mode="before")
    @classmethod
    def _split_fwmark(cls, data: Any) -> Any:
        """Read `fwmark: 0x10/0xff` as fwmark 0x10 with fwmask 0xff, as `ip rule` writes it."""
        if not isinstance(data, dict) or "fwmask" in data:
            return data
        try:
            mark, mask = split_mark(data.get("fwmark"))
        except ValueError:
            # Left whole, so the fwmark field reports it along with the rule's other errors.
            return data
        return data if mask is None else {**data, "fwmark": mark, "fwmask": mask}
