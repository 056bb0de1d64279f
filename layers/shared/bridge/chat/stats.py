"""``/whereby stats`` and ``/whereby export``: a channel's meetings over a period, as figures or as a CSV file.

What is counted, so that anyone can check a figure by hand:

- a **meeting** is a session held in one of the channel's rooms (Whereby's session: from the first person in to the
  last one out) that started in the period and has ended; one still running counts once it ends;
- its **minutes** run from its start to its end, rounded to the nearest minute (what the channel's "Meeting ended ·
  34 min" post says); the **average** is the total over the count, rounded half up to whole minutes;
- a **no-show** is a room made in the period whose time is over (it expired, or was ended) that nobody joined;
- the **busiest hosts** are the people who started the rooms the meetings were held in: the three with the most
  meetings (then the most minutes, then by name);
- the **chart** counts the meetings per week by their start, weeks beginning on Monday 00:00 UTC, from the week the
  period begins in to this one;
- the **period** is the last 7, 30 or 90 days up to the moment of asking, by the meeting's start (a room's making,
  for no-shows).

Everything is read with one range of the ``by_owner`` index (``MeetingsStore.meetings_of``): the channel's rooms and
their sessions, never a scan of the table. Sessions carry their room's topic and creator, since a session is kept
``SessionRetentionDays`` and a deleted room's record is purged sooner.

The export's link is a capability, like a recording link (``bridge.whereby.recording_link``): whoever holds it gets
the file until it expires, ``LINK_SECONDS`` after it was made. It names the channel and the period, and carries an
HMAC-SHA256 over them and the expiry, with the ``ActionKeySecret`` keys (the first signs, each verifies; the signed
text begins with ``export|``, so an End button's signature is never one). It is only ever given in an ephemeral
answer to the person who asked, in the channel it is about, and it is never logged (the API logs route keys only).
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlencode

from bridge.chat.grammar import PERIODS, ExportMeetings, ShowStats
from bridge.chat.live_posts import session_minutes
from bridge.chat.rooms import Caller, Said, Shelf, Voice
from bridge.core.i18n import DEFAULT_LANGUAGE, Speech
from bridge.core.observability import count
from bridge.store.meetings import DELETED, Meetings, SessionRecord, channel_owner

DAY = 24 * 3600
LINK_SECONDS = 15 * 60
EXPORT_PATH = "/chat/export"
TOP_HOSTS = 3
BAR_WIDTH = 20  # the busiest week's bar, in full blocks
_EIGHTHS = ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")
_FULL_BLOCK = "█"
# The file's header row stays in English in every language: it names the columns for the spreadsheets and scripts
# that read the file, whoever asked for it (the answer that gives the link names them as they are).
CSV_COLUMNS = ("start", "end", "minutes", "topic", "creator", "people")
# A spreadsheet reads a cell beginning with one of these as a formula (OWASP, CSV injection); a line feed too, in
# some. A leading quote makes it text, and shows.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_EXPIRES = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")


# the figures -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Host:
    user_id: str
    name: str
    meetings: int
    minutes: int


@dataclass(frozen=True)
class Figures:
    days: int
    since: int
    until: int
    meetings: int
    total_minutes: int
    average_minutes: int
    no_shows: int
    hosts: tuple[Host, ...]
    weeks: tuple[tuple[date, int], ...]  # (the week's Monday, meetings that week), oldest first


def held(meetings: Meetings) -> list[SessionRecord]:
    """The meetings held: sessions that ended, oldest first."""
    ended = [s for s in meetings.sessions if s.ended_at is not None]
    return sorted(ended, key=lambda s: (_start(s), s.room_session_id))


def figures(meetings: Meetings, days: int, now: int) -> Figures:
    since = now - days * DAY
    sessions = [s for s in held(meetings) if since <= _start(s) <= now]
    minutes = [session_minutes(s) for s in sessions]
    total = sum(minutes)
    met = {s.room_key for s in meetings.sessions} | meetings.joined
    no_shows = [
        room
        for room in meetings.rooms
        if room.meeting_id
        and (room.state == DELETED or room.end_at <= now)
        and room.room_key not in met
        and since <= room.created_at <= now
    ]
    return Figures(
        days=days,
        since=since,
        until=now,
        meetings=len(sessions),
        total_minutes=total,
        average_minutes=(2 * total + len(sessions)) // (2 * len(sessions)) if sessions else 0,
        no_shows=len(no_shows),
        hosts=busiest_hosts(sessions, minutes),
        weeks=per_week(sessions, since, now),
    )


def busiest_hosts(sessions: Sequence[SessionRecord], minutes: Sequence[int]) -> tuple[Host, ...]:
    tally: dict[str, list[int]] = {}
    names: dict[str, str] = {}
    for session, length in zip(sessions, minutes, strict=True):
        if not session.creator:
            continue
        counts = tally.setdefault(session.creator, [0, 0])
        counts[0] += 1
        counts[1] += length
        names[session.creator] = session.creator_name or names.get(session.creator, "")
    hosts = [Host(user, names[user], meetings, total) for user, (meetings, total) in tally.items()]
    hosts.sort(key=lambda h: (-h.meetings, -h.minutes, h.name or h.user_id))
    return tuple(hosts[:TOP_HOSTS])


def per_week(sessions: Sequence[SessionRecord], since: int, until: int) -> tuple[tuple[date, int], ...]:
    first, last = monday(since), monday(until)
    weeks = {first + timedelta(weeks=n): 0 for n in range((last - first).days // 7 + 1)}
    for session in sessions:
        weeks[monday(_start(session))] += 1
    return tuple(weeks.items())


def monday(timestamp: int) -> date:
    day = datetime.fromtimestamp(timestamp, UTC).date()
    return day - timedelta(days=day.weekday())


def bar(value: int, peak: int) -> str:
    """``value`` as blocks, the ``peak`` a bar of ``BAR_WIDTH`` full blocks, to the nearest eighth of one."""
    if not value or not peak:
        return ""
    eighths = max(1, round(value * BAR_WIDTH * 8 / peak))
    full, rest = divmod(eighths, 8)
    return _FULL_BLOCK * full + _EIGHTHS[rest]


def chart(weeks: Sequence[tuple[date, int]]) -> str:
    """A code block (monospace on both platforms, and nothing in it is read as markup). The weeks are ISO dates in
    every language: same width on every line, so the bars line up."""
    peak = max((n for _, n in weeks), default=0)
    lines = [f"{week.isoformat()} {bar(n, peak).ljust(BAR_WIDTH)} {n}" for week, n in weeks]
    return "```\n" + "\n".join(lines) + "\n```"


def stats_text(f: Figures, voice: Voice, kept_days: int | None = None) -> str:
    sp = voice.speech
    title = voice.bold(
        sp.nt(
            "Whereby meetings in this channel, last {n} day", "Whereby meetings in this channel, last {n} days", f.days
        )
    )
    lines = [sp.t("{title} ({since} to {until}, UTC)", title=title, since=_day(f.since, sp), until=_day(f.until, sp))]
    if kept_days is not None and kept_days < f.days:
        lines.append(
            sp.nt(
                "Meetings are kept {n} day, so older ones are not counted.",
                "Meetings are kept {n} days, so older ones are not counted.",
                kept_days,
            )
        )
    if not f.meetings and not f.no_shows:
        lines.append(sp.t("No meeting was held in this channel in that time."))
        return "\n".join(lines)
    if f.meetings:
        lines.append(
            sp.nt(
                "- {n} meeting, {total} in all, {average} on average",
                "- {n} meetings, {total} in all, {average} on average",
                f.meetings,
                total=sp.minutes(f.total_minutes),
                average=sp.minutes(f.average_minutes),
            )
        )
    else:
        lines.append(sp.nt("- {n} meeting", "- {n} meetings", f.meetings))
    lines.append(sp.nt("- {n} no-show (rooms nobody joined)", "- {n} no-shows (rooms nobody joined)", f.no_shows))
    if f.hosts:
        named = ", ".join(
            sp.nt("{host} ({n} meeting)", "{host} ({n} meetings)", h.meetings, host=voice.person(h.user_id, h.name))
            for h in f.hosts
        )
        lines.append(sp.t("- Busiest hosts: {hosts}", hosts=named))
    if f.meetings:
        lines.append(sp.t("Meetings per week (weeks from Monday, UTC):"))
        lines.append(chart(f.weeks))
    return "\n".join(lines)


def channel_stats(command: ShowStats, caller: Caller, ports: Shelf, voice: Voice) -> Said:
    """The channel's figures, for the caller only."""
    now = int(ports.clock())
    meetings = ports.store.meetings_of(caller.owner, now - command.days * DAY, now)
    kept = ports.store.session_retention_seconds // DAY
    count("ChatStatsShown")
    return Said(stats_text(figures(meetings, command.days, now), voice, kept))


# the export ------------------------------------------------------------------------------------------------------
def export_signature(key: str, owner: str, days: int, expires: int) -> str:
    return hmac.new(key.encode(), f"export|{owner}|{days}|{expires}".encode(), hashlib.sha256).hexdigest()


def export_url(base_url: str, keys: Sequence[str], caller: Caller, days: int, now: float) -> str:
    expires = int(now) + LINK_SECONDS
    query = {
        "team": caller.team_id,
        "channel": caller.channel_id,
        "days": days,
        "expires": expires,
        "sig": export_signature(keys[0], caller.owner, days, expires),
    }
    return f"{base_url}{EXPORT_PATH}?{urlencode(query)}"


def export_link(
    command: ExportMeetings, caller: Caller, keys: Sequence[str], base_url: str, now: float, voice: Voice
) -> Said:
    """An ephemeral link to the CSV of the channel's meetings of the period, good for ``LINK_SECONDS``."""
    sp = voice.speech
    if not base_url or not keys:
        return Said(
            sp.t(
                "The export is not set up on this bridge (no address or key for its links). Please tell your"
                " {platform} administrator.",
                platform=voice.platform,
            )
        )
    url = export_url(base_url, keys, caller, command.days, now)
    count("ChatExportLinks")
    until = datetime.fromtimestamp(int(now) + LINK_SECONDS, UTC).strftime("%H:%M UTC")
    download = voice.link(sp.t("Download the CSV"), url)  # said apart: extraction reads one call at a time
    sentences = (
        sp.nt(
            "{download} of this channel's Whereby meetings of the last {n} day ({columns}).",
            "{download} of this channel's Whereby meetings of the last {n} days ({columns}).",
            command.days,
            download=download,
            columns=", ".join(CSV_COLUMNS),
        ),
        sp.nt(
            "The link works for {n} minute, until {until}.",
            "The link works for {n} minutes, until {until}.",
            LINK_SECONDS // 60,
            until=until,
        ),
        sp.t("Only you see it; anyone you pass it on to could download the file until then."),
    )
    return Said(" ".join(sentences))


@dataclass(frozen=True)
class ExportRequest:
    owner: str
    days: int
    expires: int

    @property
    def issued(self) -> int:
        return self.expires - LINK_SECONDS


class LinkRefused(Exception):
    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind  # "invalid" | "expired"
        self.reason = reason


INVALID_LINK = "this export link is not valid; ask for a new one with /whereby export"
EXPIRED_LINK = "this export link has expired; ask for a new one with /whereby export"


def read_link(params: Mapping[str, str], keys: Sequence[str], now: float) -> ExportRequest:
    """The export a link asks for; ``LinkRefused`` for a malformed, tampered or expired one."""
    team, channel = params.get("team", ""), params.get("channel", "")
    days, expires, given = params.get("days", ""), params.get("expires", ""), params.get("sig", "")
    if not (
        _ID.fullmatch(team)
        and _ID.fullmatch(channel)
        and days in {str(n) for n in PERIODS.values()}
        and _EXPIRES.fullmatch(expires)
        and _SIGNATURE.fullmatch(given)
    ):
        raise LinkRefused("invalid", INVALID_LINK)
    request = ExportRequest(channel_owner(team, channel), int(days), int(expires))
    matched = False
    for key in keys:  # every key, in constant time: the time taken says nothing about which came close
        matched |= hmac.compare_digest(export_signature(key, request.owner, request.days, request.expires), given)
    if not matched or request.issued > now + 60:  # signed for a time ahead of ours: not a link we made
        raise LinkRefused("invalid", INVALID_LINK)
    if now >= request.expires:
        raise LinkRefused("expired", EXPIRED_LINK)
    return request


def csv_text(sessions: Sequence[SessionRecord]) -> str:
    """The meetings as CSV (RFC 4180, through ``csv``), every cell safe to open in a spreadsheet."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for s in sessions:
        row = (
            _iso(s.started_at),
            _iso(s.ended_at),
            str(session_minutes(s)),
            s.label,
            s.creator_name or s.creator,
            "; ".join(p.name for p in s.people),
        )
        writer.writerow([safe_cell(cell) for cell in row])
    return out.getvalue()


def safe_cell(text: str) -> str:
    """A cell a spreadsheet never reads as a formula: one beginning with ``=``, ``+``, ``-``, ``@``, a tab or a line
    break gets a leading single quote (OWASP's advice for CSV injection)."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def export_rows(meetings: Meetings, request: ExportRequest) -> list[SessionRecord]:
    since = request.issued - request.days * DAY
    return [s for s in held(meetings) if since <= _start(s) <= request.issued]


def _start(session: SessionRecord) -> int:
    """When the meeting began (its end, for the rare one whose start Whereby never told)."""
    return session.started_at if session.started_at is not None else session.ended_at or 0


def _iso(timestamp: int | None) -> str:
    return "" if timestamp is None else datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _day(timestamp: int, sp: Speech) -> str:
    """A day of the period. English keeps the ISO date it has always shown; the other languages write the month's
    name their way."""
    day = datetime.fromtimestamp(timestamp, UTC)
    return day.strftime("%Y-%m-%d") if sp.language == DEFAULT_LANGUAGE else sp.date(day)
