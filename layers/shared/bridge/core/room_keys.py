"""Our room key inside a Whereby room name, read without loading any HTTP client.

The key is ours (``bridge.store.meetings.new_room_key``) and ends the room-name prefix; Whereby appends a uuid right
after it. The sweeper reads it from Whereby's room list, and the Whereby events route from each event's ``roomName``,
which answers within Whereby's 5 s and so must not import the Whereby client to do it.
"""

from __future__ import annotations

import re

# Anchoring on the uuid means no word of a topic or stage name can be taken for the key.
ROOM_KEY_PATTERN = re.compile(r"(?:^|-)(z[a-z2-7]{10})-[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}$")


def room_key_of(room_name: str) -> str | None:
    """Our key embedded in a room name (``/prefix-key-uuid``, with or without the slash), or None."""
    match = ROOM_KEY_PATTERN.search(room_name.strip().lstrip("/").lower())
    return match.group(1) if match else None
