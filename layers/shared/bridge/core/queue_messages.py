"""The job queue carries three kinds of message: Kommo jobs, Whereby events and chat commands, each told apart by its
own top-level field."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def tagged_message(body: str, tag: str) -> Mapping[str, Any] | None:
    """The JSON object of a queue message that carries ``tag``; None for any other message."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, Mapping) or tag not in data:
        return None
    return data
