"""The End button's context: which room it ends, signed so that it cannot be forged or moved to another room.

Neither platform authenticates a click by itself the way we need: Mattermost's action request carries no token at
all, and a Slack button's ``value`` is what the message holds. So the button carries the room's key and an
HMAC-SHA256, with a key from the secret store, over the action, the room's key and the channel the room belongs
to. A context edited to name another room, or copied onto a post of another channel, no longer matches; a click on
a room that has ended finds the room ended.

The platform adapters put the context where their buttons carry it (Mattermost ``integration.context``, a Slack
button's ``value``) and check it before anything is read from the table.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence

END = "end"
_ROOM_KEY = re.compile(r"z[a-z2-7]{3,40}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")


def signature(key: str, action: str, room_key: str, owner: str) -> str:
    message = f"{action}|{room_key}|{owner}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def sign(keys: Sequence[str], room_key: str, owner: str, action: str = END) -> str:
    """The signature a new button carries: made with the first key (the newest, during a rotation)."""
    return signature(keys[0], action, room_key, owner)


def is_signed(keys: Sequence[str], room_key: str, owner: str, given: str, action: str = END) -> bool:
    """Whether ``given`` was made by one of ``keys`` for this action, room and channel (constant time, every key
    tried, so the time taken says nothing about which key came close)."""
    if not (_ROOM_KEY.fullmatch(room_key) and _SIGNATURE.fullmatch(given)):
        return False
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(signature(key, action, room_key, owner), given)
    return matched


def slack_value(keys: Sequence[str], room_key: str, owner: str) -> str:
    """A Slack button's ``value`` (at most 2,000 characters): the room's key and its signature."""
    return f"{room_key}.{sign(keys, room_key, owner)}"


def read_slack_value(value: str) -> tuple[str, str]:
    """(room key, signature) of a button's value; empty strings when it is not shaped like one."""
    room_key, _, given = value.partition(".")
    return room_key, given
