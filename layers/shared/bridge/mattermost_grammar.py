"""What a user typed after ``/whereby``, as one frozen command; pure functions, no I/O.

Grammar (subcommands case-insensitive, any run of spaces or newlines is one separator)::

    /whereby [topic] [duration]        start a room; duration is the last word: 30m, 2h, 1h30m
    /whereby start [topic] [duration]  the same, for a topic that begins with a subcommand word
    /whereby help
    /whereby list
    /whereby end [room name | room link]

A bare number is not a duration: topics often end in one ("Sprint 42", "Planning 2025").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_TOPIC = "Whereby meeting"
SLUG_FALLBACK = "meeting"
MIN_MINUTES = 5  # the same floor as the MATTERMOST_*_MINUTES settings
MAX_TOPIC_CHARS = 500  # keeps the channel post far below Mattermost's 16383-character post limit

_DURATION = re.compile(r"(?:(\d{1,4})h)?(?:(\d{1,6})m)?", re.IGNORECASE)
_URL = re.compile(r"[a-z][a-z0-9+.-]*://|www\.|[\w-]+(?:\.[\w-]+)+/", re.IGNORECASE)
_MENTION = re.compile(r"@([a-z0-9][a-z0-9._-]*)", re.IGNORECASE)
_PUNCTUATION = "()[]{}<>\"'.,;:!?*"
# A room key as new_room_key() makes it; the last one in a room name is ours (a topic word may look like a key).
_ROOM_KEY = re.compile(r"(?<![a-z0-9])(z[a-z2-7]{10})(?=-|$)")


@dataclass(frozen=True)
class Limits:
    default_minutes: int
    max_minutes: int


@dataclass(frozen=True)
class StartRoom:
    topic: str  # shown to people: the text without the duration and the @mentions
    minutes: int
    mentions: tuple[str, ...] = ()  # "@alice", echoed in the channel post so they are notified
    slug_source: str = ""  # the topic with no mention, channel, e-mail address or URL: safe in a room name


@dataclass(frozen=True)
class ShowHelp:
    pass


@dataclass(frozen=True)
class ListRooms:
    pass


@dataclass(frozen=True)
class EndRoom:
    room_key: str | None = None  # None: the caller's latest room in this channel
    reference: str = ""  # what the caller typed, made safe to quote back in Markdown


@dataclass(frozen=True)
class Invalid:
    problem: str  # a sentence for the caller, ephemeral


Command = StartRoom | ShowHelp | ListRooms | EndRoom | Invalid


def parse(text: str, limits: Limits, trigger: str = "/whereby") -> Command:
    words = text.split()
    if not words:
        return StartRoom(DEFAULT_TOPIC, limits.default_minutes)
    head, rest = words[0].lower(), words[1:]
    if head == "help":
        return ShowHelp()
    if head == "start":
        return parse_start(rest, limits)
    if head == "list":
        return ListRooms() if not rest else _reserved("list", trigger)
    if head == "end":
        if len(rest) > 1:
            return _reserved("end", trigger)
        return parse_end(rest[0], trigger) if rest else EndRoom()
    return parse_start(words, limits)


def parse_start(words: list[str], limits: Limits) -> StartRoom | Invalid:
    words, asked = _split_duration(words)
    minutes = limits.default_minutes if asked is None else asked
    if minutes < MIN_MINUTES:
        return Invalid(f"A room must be open for at least {MIN_MINUTES} minutes.")
    if minutes > limits.max_minutes:
        return Invalid(f"A room can be open for at most {human_minutes(limits.max_minutes)}.")
    mentions = tuple(dict.fromkeys(m for m in map(mention_in, words) if m))
    topic = " ".join(word for word in words if mention_in(word) is None)
    return StartRoom(
        topic=_clip(topic) or DEFAULT_TOPIC,
        minutes=minutes,
        mentions=mentions,
        slug_source=" ".join(word for word in words if not _personal(word)),
    )


def parse_end(reference: str, trigger: str) -> EndRoom | Invalid:
    key = room_key_in(reference)
    shown = _clip(reference.replace("`", "'"), 80)
    if key is None:
        return Invalid(
            f"`{shown}` is not the name or link of a room made with {trigger}."
            f" `{trigger} list` shows the rooms of this channel."
        )
    return EndRoom(room_key=key, reference=shown)


def duration_minutes(word: str) -> int | None:
    """``30m``, ``2h``, ``1h30m`` (any case) in minutes; None when the word is not a duration."""
    match = _DURATION.fullmatch(word)
    if not match or not any(match.groups()):
        return None
    hours, minutes = (int(group or 0) for group in match.groups())
    return hours * 60 + minutes


def human_minutes(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    if not hours:
        return f"{rest} min"
    return f"{hours} h {rest} min" if rest else f"{hours} h"


def mention_in(word: str) -> str | None:
    """``@name`` when the word is a mention (surrounding punctuation and Markdown emphasis ignored)."""
    match = _MENTION.fullmatch(word.strip(_PUNCTUATION))
    return f"@{match.group(1).lower()}" if match else None


def room_key_in(reference: str) -> str | None:
    """Our room key in a room name (``/name``, ``name``) or room link (host links too, with their query)."""
    text = reference.strip("<>").lower()
    path = urlsplit(text).path if "://" in text else text.split("?", 1)[0].split("#", 1)[0]
    name = path.strip("/").rsplit("/", 1)[-1]
    keys = _ROOM_KEY.findall(name)
    return keys[-1] if keys else None


def _split_duration(words: list[str]) -> tuple[list[str], int | None]:
    """The duration is the last word, not counting @mentions typed after it."""
    for index in range(len(words) - 1, -1, -1):
        if mention_in(words[index]) is None:
            minutes = duration_minutes(words[index])
            if minutes is None:
                return words, None
            return words[:index] + words[index + 1 :], minutes
    return words, None


def _personal(word: str) -> bool:
    """Mentions, ~channels, e-mail addresses and URLs never go into a room name (rooms are public links)."""
    return "@" in word or word.lstrip(_PUNCTUATION).startswith("~") or _URL.search(word) is not None


def _clip(text: str, limit: int = MAX_TOPIC_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _reserved(word: str, trigger: str) -> Invalid:
    usage = {"list": f"`{trigger} list` takes nothing after it", "end": f"`{trigger} end` takes one room name or link"}
    return Invalid(f"{usage[word]}. To start a room whose topic begins with “{word}”, type `{trigger} start {word} …`.")
