"""What a user typed after ``/whereby``, as one frozen command; pure functions, no I/O.

Grammar (subcommands case-insensitive, any run of spaces or newlines is one separator)::

    /whereby [topic] [duration]        start a room; duration is the last word: 30m, 2h, 1h30m
                                       (@mentions anywhere: the people Mattermost resolved are invited)
    /whereby start [topic] [duration]  the same, for a topic that begins with a subcommand word
    /whereby help
    /whereby list
    /whereby end [room name | room link]
    /whereby stats [7d|30d|90d]        this channel's meetings over the period (default 30d)
    /whereby export [7d|30d|90d]       a short-lived link to a CSV of them
    /whereby every … | schedules | unschedule <id>    recurring meetings (``bridge.chat.schedules``)

A bare number is not a duration: topics often end in one ("Sprint 42", "Planning 2025"). A last word shaped like a
duration that is not one we accept (99999h, 1h-5m, 1.5h, 0m) is refused, never taken into the topic.

Whatever the caller typed is shown back only through ``quote`` (``literal()`` unless told): Mattermost renders
``literal()`` as plain text; each platform's adapter passes its own. An ``Invalid`` problem is said in the caller's
language (``speech``, English unless told).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from urllib.parse import urlsplit

from bridge.chat.schedule_commands import SCHEDULE_WORDS, ScheduleCommand
from bridge.core import i18n
from bridge.core.i18n import N_, Speech

# The label of a room started without a topic: stored as it is (a second untitled /whereby finds it by it), shown
# in the reader's language (``topic_shown``).
DEFAULT_TOPIC = N_("Whereby meeting")
SLUG_FALLBACK = "meeting"
MIN_MINUTES = 5  # the same floor as the MATTERMOST_*_MINUTES settings
MAX_TOPIC_CHARS = 500  # keeps the channel post far below Mattermost's 16383-character post limit
# The URL check looks at this much of a word: its cost grows with the square of the length it reads, and a
# 20,000-character word took longer than Mattermost waits. Any URL shows itself within its first characters.
URL_CHECK_CHARS = 256

# ASCII digits only: \d would also read the digits of other scripts (Arabic-Indic 30 as "30").
_DURATION = re.compile(r"(?:([0-9]+)h)?(?:([0-9]+)m)?", re.IGNORECASE | re.ASCII)
_NUMBER = r"(?:[0-9]+(?:[.,][0-9]*)?|[.,][0-9]+)"
# What people type when they mean a duration, right or wrong: signs, decimals, several parts, a unitless tail.
_DURATION_SHAPED = re.compile(rf"[+-]?{_NUMBER}[hm](?:[+-]?{_NUMBER}[hm])*[0-9]*", re.IGNORECASE | re.ASCII)
_DURATION_DIGITS = 6  # more digits than this is far beyond any maximum; also keeps int() cheap
_URL = re.compile(r"[a-z][a-z0-9+.-]*://|www\.|[\w-]+(?:\.[\w-]+)+/", re.IGNORECASE)
_MENTION = re.compile(r"@([a-z0-9][a-z0-9._-]*)", re.IGNORECASE)
_PUNCTUATION = "()[]{}<>\"'.,;:!?*"
# A room key as new_room_key() makes it; the last one in a room name is ours (a topic word may look like a key).
_ROOM_KEY = re.compile(r"(?<![a-z0-9])(z[a-z2-7]{10})(?=-|$)")
# The periods ``stats`` and ``export`` take, in days: 90 is the longest, as sessions are kept 90 days by default.
PERIODS = {"7d": 7, "30d": 30, "90d": 90}
DEFAULT_PERIOD = "30d"
CHANNEL_WIDE = frozenset({"channel", "all", "here"})  # no user has these names; they notify everyone

# Markdown literal text. Mattermost's web app parses posts with its fork of marked, the mobile app with CommonMark:
# these are the characters a backslash escapes in both.
_BACKSLASHED = frozenset("\\`*_{}[]()#+-.!|~>")
# Neither parser has a backslash escape for these; an entity keeps them literal in both. marked reads U+2424 (the
# symbol for newline) as a line break, and "$…$" as LaTeX where the server enables it.
_ENTITIES = {"&": "&amp;", "<": "&lt;", "$": "&#36;", "\u2424": "&#9252;"}
# Mattermost's server ends a word at a zero-width joiner and its apps want a letter or digit after "@", "~" and "#":
# one after these keeps @mentions, ~channel links and #hashtags from forming (the web app forms the last two after
# Markdown, on the text the escapes give back).
ZERO_WIDTH_JOINER = "\u200d"
_JOINED = frozenset("@~#")


@dataclass(frozen=True)
class Limits:
    default_minutes: int
    max_minutes: int


@dataclass(frozen=True)
class StartRoom:
    topic: str  # shown to people (through literal()): the text without the duration and the @mentions
    minutes: int
    mentions: tuple[str, ...] = ()  # "@alice", resolved by Mattermost: echoed in the channel post so they are notified
    slug_source: str = ""  # the topic with no mention, channel, e-mail address or URL: safe in a room name
    not_invited: tuple[str, ...] = ()  # "@channel", "@nobody": @words typed but not resolved to a user of the team


@dataclass(frozen=True)
class ShowHelp:
    pass


@dataclass(frozen=True)
class ListRooms:
    pass


@dataclass(frozen=True)
class EndRoom:
    room_key: str | None = None  # None: the caller's latest room in this channel
    reference: str = ""  # what the caller typed, clipped; quoted back through literal()


@dataclass(frozen=True)
class ShowStats:
    days: int = PERIODS[DEFAULT_PERIOD]


@dataclass(frozen=True)
class ExportMeetings:
    days: int = PERIODS[DEFAULT_PERIOD]


@dataclass(frozen=True)
class Invalid:
    problem: str  # a sentence for the caller, ephemeral


Command = StartRoom | ShowHelp | ListRooms | EndRoom | ShowStats | ExportMeetings | Invalid | ScheduleCommand


def parse(
    text: str,
    limits: Limits,
    trigger: str = "/whereby",
    members: Collection[str] = (),
    quote: Callable[[str], str] | None = None,
    speech: Speech | None = None,
) -> Command:
    """``members``: the usernames the platform resolved in the text to users of the team (Mattermost's
    ``user_mentions``); ``quote``: how the platform shows typed text back as plain text; ``speech``: the caller's
    language, for a problem."""
    quote = quote or literal
    sp = speech or i18n.speech()
    words = text.split()
    if not words:
        return StartRoom(DEFAULT_TOPIC, limits.default_minutes)
    head, rest = words[0].lower(), words[1:]
    if head == "help":
        return ShowHelp()
    if head == "start":
        return parse_start(rest, limits, trigger, members, quote, sp)
    if head == "list":
        return ListRooms() if not rest else _reserved("list", trigger, sp)
    if head == "end":
        if len(rest) > 1:
            return _reserved("end", trigger, sp)
        return parse_end(rest[0], trigger, quote, sp) if rest else EndRoom()
    if head in ("stats", "export"):
        return parse_period(head, rest, trigger, quote, sp)
    if head in SCHEDULE_WORDS:  # recurring meetings: bridge.chat.schedules
        from bridge.chat.schedules import parse_schedule

        return parse_schedule(head, rest, limits, trigger, quote)
    return parse_start(words, limits, trigger, members, quote, sp)


def parse_start(
    words: list[str],
    limits: Limits,
    trigger: str = "/whereby",
    members: Collection[str] = (),
    quote: Callable[[str], str] | None = None,
    speech: Speech | None = None,
) -> StartRoom | Invalid:
    words, asked = _split_duration(words)
    minutes = limits.default_minutes
    if asked is not None:
        minutes = duration_minutes(asked) or 0
        if not MIN_MINUTES <= minutes <= limits.max_minutes:
            return Invalid(_duration_problem(asked, limits, trigger, quote or literal, speech or i18n.speech()))
    invited = {mention: invitee(mention, members) for mention in map(mention_in, words) if mention}
    topic = " ".join(word for word in words if mention_in(word) is None)
    return StartRoom(
        topic=_clip(topic) or DEFAULT_TOPIC,
        minutes=minutes,
        mentions=tuple(dict.fromkeys(user for user in invited.values() if user)),
        slug_source=" ".join(word for word in words if not _personal(word)),
        not_invited=tuple(mention for mention, user in invited.items() if user is None),
    )


def parse_end(
    reference: str, trigger: str, quote: Callable[[str], str] | None = None, speech: Speech | None = None
) -> EndRoom | Invalid:
    key = room_key_in(reference)
    shown = _clip(reference, 80)
    if key is None:
        return Invalid(
            (speech or i18n.speech()).t(
                "“{reference}” is not the name or link of a room made with {trigger}."
                " `{trigger} list` shows the rooms of this channel.",
                reference=(quote or literal)(shown),
                trigger=trigger,
            )
        )
    return EndRoom(room_key=key, reference=shown)


def parse_period(
    word: str, rest: list[str], trigger: str, quote: Callable[[str], str], speech: Speech | None = None
) -> Command:
    """``stats`` / ``export`` and their one optional period (``7d``, ``30d``, ``90d``, any case)."""
    sp = speech or i18n.speech()
    if len(rest) > 1:
        return _reserved(word, trigger, sp)
    period = rest[0].lower() if rest else DEFAULT_PERIOD
    if period not in PERIODS:
        return Invalid(
            sp.t(
                "“{given}” is not a period `{trigger} {word}` knows: give 7d, 30d or 90d (default {default})."
                " To start a room whose topic begins with “{word}”, type `{trigger} start {word} …`.",
                given=quote(_clip(rest[0], 40)),
                trigger=trigger,
                word=word,
                default=DEFAULT_PERIOD,
            )
        )
    days = PERIODS[period]
    return ShowStats(days) if word == "stats" else ExportMeetings(days)


def duration_minutes(word: str) -> int | None:
    """``30m``, ``2h``, ``1h30m`` (any case, ASCII digits) in minutes; None when the word is not a duration."""
    match = _DURATION.fullmatch(word)
    if not match or not any(match.groups()):
        return None
    if any(len(group.lstrip("0")) > _DURATION_DIGITS for group in match.groups() if group):
        return None
    hours, minutes = (int(group or 0) for group in match.groups())
    return hours * 60 + minutes


def duration_shaped(word: str) -> bool:
    """True for a word meant as a duration, valid or not: ``45m``, ``99999h``, ``1h-5m``, ``1.5h``, ``-5m``."""
    return _DURATION_SHAPED.fullmatch(word) is not None


def invitee(mention: str, members: Collection[str]) -> str | None:
    """``@name`` of the user Mattermost resolved for a typed mention; None for @channel, @all, @here and unknowns.

    Mattermost also resolves a name typed with trailing dots, dashes or underscores ("@alice_") to the user.
    """
    name = mention.removeprefix("@")
    while name and name not in CHANNEL_WIDE:
        if name in members:
            return f"@{name}"
        if name[-1] not in "._-":
            break
        name = name[:-1]
    return None


def literal(text: str) -> str:
    """``text`` as Markdown that Mattermost shows as plain text, on one line.

    No link, image, emphasis, code, heading, quote, list, table, autolink, mention, channel link or hashtag can be
    formed from the result, in the running text of our own Markdown (a code span would show the escapes).
    """
    text = " ".join(text.split())
    out: list[str] = []
    for index, char in enumerate(text):
        after = text[index + 1 : index + 2]
        if char == "\\" and _ascii_alnum(after):
            out.append(char)  # both parsers show a backslash before a letter or digit as it is
        elif char in _BACKSLASHED:
            out.append("\\" + char)
        elif char in _ENTITIES:
            out.append(_ENTITIES[char])
        elif char == ":" and _ascii_alnum(text[index - 1 : index]) and after.strip():
            # "https:", "mailto:": marked links a scheme followed by // or a letter, digit or %
            out.append(char + ZERO_WIDTH_JOINER)
        else:
            out.append(char)
        if char in _JOINED:
            out.append(ZERO_WIDTH_JOINER)
    return "".join(out)


def human_minutes(minutes: int, speech: Speech | None = None) -> str:
    """ "45 min", "1 h 30 min", in the reader's language (English unless told)."""
    return (speech or i18n.speech()).minutes(minutes)


def topic_shown(label: str, speech: Speech) -> str:
    """A room's topic as a reader sees it: a room started without one is "Whereby meeting" in their language."""
    return speech.t(DEFAULT_TOPIC) if label == DEFAULT_TOPIC else label


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


def _split_duration(words: list[str]) -> tuple[list[str], str | None]:
    """The duration word is the last word, not counting @mentions typed after it."""
    for index in range(len(words) - 1, -1, -1):
        if mention_in(words[index]) is None:
            if not duration_shaped(words[index]):
                return words, None
            return words[:index] + words[index + 1 :], words[index]
    return words, None


def _duration_problem(word: str, limits: Limits, trigger: str, quote: Callable[[str], str], sp: Speech) -> str:
    example = min(90, limits.max_minutes)
    hours, minutes = divmod(example, 60)
    written = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    return sp.nt(
        "“{given}” is not a duration a room can have: a room is open for at least {n} minute and at most {most}."
        " Give the duration as the last word, in whole hours and minutes, for example `{trigger} Review {example}`.",
        "“{given}” is not a duration a room can have: a room is open for at least {n} minutes and at most {most}."
        " Give the duration as the last word, in whole hours and minutes, for example `{trigger} Review {example}`.",
        MIN_MINUTES,
        given=quote(_clip(word, 40)),
        most=sp.minutes(limits.max_minutes),
        trigger=trigger,
        example=written,
    )


def _ascii_alnum(char: str) -> bool:
    return char.isascii() and char.isalnum()


def _personal(word: str) -> bool:
    """Mentions, ~channels, e-mail addresses and URLs never go into a room name (rooms are public links)."""
    return "@" in word or word.lstrip(_PUNCTUATION).startswith("~") or _URL.search(word[:URL_CHECK_CHARS]) is not None


def _clip(text: str, limit: int = MAX_TOPIC_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# Each one whole, so that a translator can order the sentence as the language wants.
_RESERVED = {
    "list": N_(
        "`{trigger} list` takes nothing after it. To start a room whose topic begins with “{word}”, type"
        " `{trigger} start {word} …`."
    ),
    "end": N_(
        "`{trigger} end` takes one room name or link. To start a room whose topic begins with “{word}”, type"
        " `{trigger} start {word} …`."
    ),
    "stats": N_(
        "`{trigger} stats` takes one period: 7d, 30d or 90d. To start a room whose topic begins with “{word}”, type"
        " `{trigger} start {word} …`."
    ),
    "export": N_(
        "`{trigger} export` takes one period: 7d, 30d or 90d. To start a room whose topic begins with “{word}”,"
        " type `{trigger} start {word} …`."
    ),
}


def _reserved(word: str, trigger: str, sp: Speech) -> Invalid:
    return Invalid(sp.t(_RESERVED[word], trigger=trigger, word=word))
