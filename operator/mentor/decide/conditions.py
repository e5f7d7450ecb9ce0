"""Condition bookkeeping, pure: the Kubernetes conventions in one place.

`lastTransitionTime` moves only when a condition's status flips, so `kubectl describe` tells how
long a job has been in its state, not when the operator last looked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from mentor.api.status import Condition, ConditionStatus, ConditionType


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to record on the job (mentor.controller.events writes it)."""

    type: str  # Normal or Warning
    reason: str
    message: str


class HasConditions(Protocol):
    conditions: list[Condition]


def set_condition(
    status: HasConditions,
    type_: ConditionType,
    value: ConditionStatus,
    reason: str,
    message: str,
    now: str,
    generation: int | None = None,
) -> bool:
    """Set one condition in place; returns True when its status flipped (a transition)."""
    for i, old in enumerate(status.conditions):
        if old.type == type_:
            flipped = old.status != value
            status.conditions[i] = Condition(
                type=type_, status=value, reason=reason, message=message,
                last_transition_time=now if flipped else old.last_transition_time,
                observed_generation=generation,
            )
            return flipped
    status.conditions.append(Condition(
        type=type_, status=value, reason=reason, message=message,
        last_transition_time=now, observed_generation=generation,
    ))
    return True


def get_condition(status: HasConditions, type_: ConditionType) -> Condition | None:
    return next((c for c in status.conditions if c.type == type_), None)


def is_true(status: HasConditions, type_: ConditionType) -> bool:
    cond = get_condition(status, type_)
    return cond is not None and cond.status == "True"


def transition(status: HasConditions, events: list[Event], type_: ConditionType, value: bool,
               reason: str, message: str, now: str, generation: int | None,
               warning: bool = False) -> None:
    """Set a condition, and record an Event when it turns True, or for a warning when it flips
    or changes its reason (PodsPending, then Unschedulable, is news however fast the scheduler
    was)."""
    before = get_condition(status, type_)
    flipped = set_condition(status, type_, "True" if value else "False", reason, message, now,
                            generation)
    news = flipped or before is None or before.reason != reason
    if (flipped and value) or (warning and news):
        events.append(Event("Warning" if warning else "Normal", reason, message))
