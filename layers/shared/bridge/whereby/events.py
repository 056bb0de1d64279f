"""A Whereby webhook event, as the use-cases read it (contracts: whereby-events.md §1-2)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class WherebyEvent:
    id: str
    type: str
    created_at: str
    data: Mapping[str, Any]
    # The room's name, normalised: last path segment, lower-case, no leading "/"; for a recording.finished without
    # roomName, the part of ``filename`` before its "-YYYY-MM-DDTHH:MM:SSZ" suffix.
    room_name: str
