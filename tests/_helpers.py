"""Small helpers shared by the tests."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tower_trio import Trigger


def spec_of(trigger: Trigger) -> dict[str, Any]:
    """The spec of a trigger without a plate, typed as the object it is."""
    assert isinstance(trigger.spec, dict)
    return trigger.spec
