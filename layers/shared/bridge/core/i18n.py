"""Every sentence a person reads comes from the message catalogue: gettext, in ``bridge/core/locale``.

The message ids are the English sentences, with ``{name}`` placeholders filled in by ``str.format`` after the
translation is looked up, so a translator can move a placeholder where the language wants it. ``make messages``
extracts the ids from the code (``Speech.t`` and ``Speech.nt`` calls, and ``N_`` for a sentence kept in a constant),
merges them into each language's ``.po`` file and compiles the ``.mo`` files the functions read; the tests check that
every id is translated in every language with the same placeholders, and that the ``.mo`` files are current.

Whose language: the chat user's own where the platform says it (Mattermost's user ``locale`` through the bot,
Slack's ``users.info``), the Kommo account's ``language`` for notes and tasks, and otherwise the stack's
``Language`` parameter. ``language_of`` maps what a platform says onto the languages the catalogue has.

A meeting's day and time is written from the catalogue too (the short names of days and months, and the order), so
a note or a post needs no Babel; Babel writes the rarer full dates and large numbers, imported only then.
"""

from __future__ import annotations

import gettext
import re
from datetime import datetime
from functools import cache
from pathlib import Path

DOMAIN = "bridge"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DEFAULT_LANGUAGE = "en"
# English is the message ids themselves; the others have a catalogue each. pt_BR is the Portuguese of Kommo's and
# Mattermost's largest Portuguese-speaking market; a Portuguese user from elsewhere reads it too.
LANGUAGES = ("en", "es", "pt_BR", "ru")
_TAG = re.compile(r"([A-Za-z]{2,3})(?:[-_]([A-Za-z0-9]{2,8}))?")


def N_(message: str) -> str:
    """Marks a sentence kept in a constant for extraction; ``Speech.t`` translates it where it is said."""
    return message


# The short names are in the catalogue (as CLDR writes them in a date: "дек.", "dez."), so that a note or a post
# with a date needs no Babel: its import and locale data cost a function about 0.15x of its cold start.
_DAYS = (N_("Mon"), N_("Tue"), N_("Wed"), N_("Thu"), N_("Fri"), N_("Sat"), N_("Sun"))
_MONTHS = (
    N_("Jan"), N_("Feb"), N_("Mar"), N_("Apr"), N_("May"), N_("Jun"),
    N_("Jul"), N_("Aug"), N_("Sep"), N_("Oct"), N_("Nov"), N_("Dec"),
)  # fmt: skip


def language_of(tag: object, default: str = DEFAULT_LANGUAGE) -> str:
    """The catalogue's language for a platform's locale tag ("es", "pt-BR", "es-LA", "ru_RU"), else ``default``.

    Only the language part decides (a Mexican "es-MX" user reads the Spanish we have); anything unreadable or a
    language we have no catalogue for falls back."""
    if not isinstance(tag, str):
        return default
    found = _TAG.fullmatch(tag.strip())
    if found is None:
        return default
    language = found.group(1).lower()
    if language == "pt":
        return "pt_BR"
    return language if language in LANGUAGES else default


def setting_language(value: str) -> str:
    """The ``Language`` parameter's value ("en", "es", "pt-BR", "ru") as a catalogue language, or ValueError."""
    language = language_of(value, "")
    if not language:
        raise ValueError(f"is {value!r}; expected one of en, es, pt-BR, ru")
    return language


class Speech:
    """The sentences of one language: ``t`` for a sentence, ``nt`` for one that depends on a count."""

    def __init__(self, language: str) -> None:
        self.language = language if language in LANGUAGES else DEFAULT_LANGUAGE
        self._catalogue: gettext.NullTranslations = (
            gettext.NullTranslations()
            if self.language == DEFAULT_LANGUAGE
            else gettext.translation(DOMAIN, LOCALE_DIR, languages=[self.language])
        )

    def __repr__(self) -> str:
        return f"Speech({self.language!r})"

    def t(self, message: str, /, **values: object) -> str:
        """The sentence in this language, its ``{placeholders}`` filled in."""
        said = self._catalogue.gettext(message)
        return said.format(**values) if values else said

    def nt(self, singular: str, plural: str, n: int, /, **values: object) -> str:
        """The form for ``n`` (Russian has three, English two); ``{n}`` is the count, written for the language."""
        said = self._catalogue.ngettext(singular, plural, n)
        return said.format(n=self.number(n), **values)

    def minutes(self, n: int) -> str:
        """A duration: "45 min", "1 h 30 min", in this language."""
        hours, rest = divmod(max(0, int(n)), 60)
        if not hours:
            return self.t("{n} min", n=rest)
        if not rest:
            return self.t("{n} h", n=hours)
        return self.t("{hours} h {minutes} min", hours=hours, minutes=rest)

    def number(self, n: int) -> str:
        """An integer with the language's grouping."""
        if abs(n) < 1000:
            return str(n)
        from babel.numbers import format_decimal

        return format_decimal(n, locale=self.language)

    def day_and_time(self, when: datetime) -> str:
        """A weekday, a day and a 24-hour time, as the language writes them ("Thu 4 Dec, 14:00").

        The weekday and the month's name keep the date from being misread in any locale; ``when`` is already in
        the zone it is shown in."""
        return self.t(
            "{weekday} {day} {month}, {time}",
            weekday=self.t(_DAYS[when.weekday()]),
            day=when.day,
            month=self.t(_MONTHS[when.month - 1]),
            time=f"{when:%H:%M}",
        )

    def date(self, when: datetime) -> str:
        """A date alone."""
        from babel.dates import format_skeleton

        return format_skeleton("yMMMd", when, locale=self.language)


@cache
def speech(language: str = DEFAULT_LANGUAGE) -> Speech:
    """The ``Speech`` of a catalogue language (read once per container)."""
    return Speech(language)
