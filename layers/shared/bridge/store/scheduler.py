"""EventBridge Scheduler as the recurring meetings use it: one schedule per meeting, in the stack's own group.

The group belongs to the stack (``AWS::Scheduler::ScheduleGroup``): deleting the stack deletes the group, and the
Scheduler then deletes every schedule in it. Each schedule invokes the fire function with ``{"schedule_id": …}``,
with no flexible window, and gives up on an occurrence it could not deliver within ``max_age_seconds``: a meeting
posted long after its time helps nobody.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from bridge.core.errors import PeerUnavailable

ENABLED, DISABLED = "ENABLED", "DISABLED"


@dataclass(frozen=True)
class SchedulerTarget:
    group: str
    role_arn: str  # the role the Scheduler assumes to invoke the function
    function_arn: str
    max_age_seconds: int = 300


class EventBridgeScheduler:
    def __init__(self, client: Any, target: SchedulerTarget) -> None:
        self._client = client
        self._target = target

    def create(self, name: str, expression: str, zone: str) -> None:
        """A new schedule; one that exists already (a retried request) is left as it is."""
        try:
            self._call("create_schedule", **self._definition(name, expression, zone, ENABLED))
        except ClientError as exc:
            if _code(exc) != "ConflictException":
                raise PeerUnavailable(f"scheduler create_schedule failed: {_code(exc)}") from None

    def disable(self, name: str) -> None:
        """The schedule stops firing; gone already is as good."""
        try:
            found = self._call("get_schedule", Name=name, GroupName=self._target.group)
            # UpdateSchedule replaces the whole definition: everything is sent back as it was, but the state.
            kept = ("ScheduleExpression", "ScheduleExpressionTimezone", "FlexibleTimeWindow", "Target")
            definition = {key: found[key] for key in kept if key in found}
            self._call("update_schedule", Name=name, GroupName=self._target.group, State=DISABLED, **definition)
        except ClientError as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise PeerUnavailable(f"scheduler update_schedule failed: {_code(exc)}") from None

    def delete(self, name: str) -> None:
        """Gone already is as good: a repeated cancel changes nothing."""
        try:
            self._call("delete_schedule", Name=name, GroupName=self._target.group)
        except ClientError as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise PeerUnavailable(f"scheduler delete_schedule failed: {_code(exc)}") from None

    def _definition(self, name: str, expression: str, zone: str, state: str) -> dict[str, Any]:
        target = self._target
        definition: dict[str, Any] = {
            "Name": name,
            "GroupName": target.group,
            "ScheduleExpression": expression,
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "State": state,
            "ActionAfterCompletion": "NONE",
            "Target": {
                "Arn": target.function_arn,
                "RoleArn": target.role_arn,
                "Input": json.dumps({"schedule_id": name}),
                "RetryPolicy": {"MaximumEventAgeInSeconds": max(60, target.max_age_seconds), "MaximumRetryAttempts": 3},
            },
        }
        if zone:
            definition["ScheduleExpressionTimezone"] = zone
        return definition

    def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._client, operation)(**kwargs)
        except BotoCoreError as exc:
            raise PeerUnavailable(f"scheduler unreachable: {type(exc).__name__}") from None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))
