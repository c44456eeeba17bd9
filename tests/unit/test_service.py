"""service_changes: who left or rejoined service between two reconciles."""

from __future__ import annotations

from ecmpd.health.service import ServiceChange, service_changes
from ecmpd.model import Family

V4, V6 = Family.INET, Family.INET6


def test_changes_per_uplink_and_family() -> None:
    before = {("a", V4): True, ("a", V6): True, ("b", V4): False}
    after = {("a", V4): True, ("a", V6): False, ("b", V4): True}
    assert service_changes(before, after) == [
        ServiceChange("a", V6, in_service=False),
        ServiceChange("b", V4, in_service=True),
    ]
    assert service_changes(after, after) == []


def test_a_new_uplink_out_of_service_has_left_and_a_removed_one_is_no_change() -> None:
    # A first reconcile (nothing before) or a reload adding an uplink: out means left.
    assert service_changes({}, {("a", V4): True, ("b", V4): False}) == [
        ServiceChange("b", V4, in_service=False)
    ]
    assert service_changes({("gone", V4): True}, {}) == []
