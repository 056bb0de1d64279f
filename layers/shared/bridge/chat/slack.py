"""The Slack adapter of ``/whereby``: check Slack's signature, read the fields, answer within Slack's 3 seconds.

- Signature: ``X-Slack-Signature: v0=<hex>``, HMAC-SHA256 with the app's signing secret over
  ``v0:{X-Slack-Request-Timestamp}:{raw body}``, checked by ``slack_sdk``'s ``SignatureVerifier`` (constant time,
  timestamp within 5 minutes of our clock, either side) against every secret we hold (two during a rotation). A bad,
  missing or stale signature gets 401 and nothing is done; nothing of an unsigned body is read.
- Workspace allow-list: each signing secret is bound to the workspace (``team_id``) it belongs to in the secret; a
  request signed with it that names another workspace (the app installed there too) is refused with a sentence.
- Slack gives 3 seconds and never retries. Starting and ending a room call Whereby, so they become a job on the FIFO
  job queue (deduplication id: ``trigger_id``; group: the channel) and the caller sees "Making your Whereby room…"
  at once; the worker (``bridge.chat.slack_worker``) makes the room and posts the outcome through ``response_url``.
  ``list`` and ``help`` need no Whereby call and answer here.
- Language: the route answers in the stack's ``Language``; the caller's own Slack language takes a Web API call
  that does not fit in 3 seconds, so the worker reads it for the room and everything after.

The route loads no HTTP client and no Whereby client: a cold start is the whole budget's largest part.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args
from urllib.parse import parse_qs

from slack_sdk.signature import Clock, SignatureVerifier

from bridge.chat.grammar import (
    ZERO_WIDTH_JOINER,
    EndRoom,
    ExportMeetings,
    Invalid,
    Limits,
    ListRooms,
    ShowHelp,
    ShowStats,
    StartRoom,
    parse,
)
from bridge.chat.rooms import STORAGE_TROUBLE, Caller, Said, Shelf, Voice, help_text, invalid_text, list_rooms
from bridge.chat.schedule_commands import ListSchedules, ScheduleCommand, ScheduleEvery, ScheduleProblem, Unschedule
from bridge.core.config import Settings
from bridge.core.errors import PeerUnavailable
from bridge.core.http_api import MAX_FORM_BYTES, ApiRequest, BadRequest, body_bytes, is_callback_url, json_response
from bridge.core.i18n import speech
from bridge.core.observability import count, count_reason, logger
from bridge.core.queue_messages import tagged_message
from bridge.store.credentials import SecretError

SOURCE = "slack"
TOLERANCE_SECONDS = 300  # slack_sdk's window; checked here too, so that a stale request is counted apart
MESSAGE_FIELD = "slack_command"  # the worker tells a Slack job from the other messages of the queue by this field
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TRIGGER = re.compile(r"/[a-z0-9._-]{1,64}")
_DEDUP_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # what the grammar reads as a mention
# Slack's escaped references in a command's text: <@U…|name>, <#C…|name>, <!here>, <https://…|label>.
_REFERENCE = re.compile(r"<([@#!]?)([^<>|\s]*)(?:\|([^<>]*))?>")

RefusalKind = Literal["signature", "stale", "malformed", "team-not-enabled"]
REFUSAL_KINDS: tuple[RefusalKind, ...] = get_args(RefusalKind)

Reply = dict[str, Any]  # a Slack message, as sent on the wire


# Slack's mrkdwn ------------------------------------------------------------------------------------------------
def slack_literal(text: str) -> str:
    """``text`` as mrkdwn Slack shows as it is, on one line: no mention, channel link or link can be formed.

    Slack's only escapes are ``&amp;``, ``&lt;`` and ``&gt;``; with ``<`` escaped no ``<@U…>``, ``<!channel>`` or
    ``<url|label>`` forms. A zero-width joiner after ``@`` keeps a typed ``@here`` from being read as a mention, and
    one after a ``:`` or ``.`` inside a word keeps Slack from linking a typed address.
    """
    text = " ".join(text.split())
    out: list[str] = []
    for index, char in enumerate(text):
        out.append({"&": "&amp;", "<": "&lt;", ">": "&gt;"}.get(char, char))
        after = text[index + 1 : index + 2]
        if char == "@" or (char in ":." and index and text[index - 1].isalnum() and after.strip()):
            out.append(ZERO_WIDTH_JOINER)
    return "".join(out)


VOICE = Voice(
    platform="Slack",
    literal=slack_literal,
    bold=lambda text: f"*{text}*",
    link=lambda text, url: f"<{url}|{text}>",
    # <@U…> shows the person's current name; an ephemeral answer notifies nobody
    person=lambda user_id, name: f"<@{user_id}>" if _ID.fullmatch(user_id) else slack_literal(name or "someone"),
)


def ephemeral(text: str) -> Reply:
    return {"response_type": "ephemeral", "text": text}


def said(outcome: Said) -> Reply:
    return {"response_type": "in_channel" if outcome.in_channel else "ephemeral", "text": outcome.text}


def resolved_mentions(text: str) -> tuple[str, dict[str, str]]:
    """The text with Slack's references written as people type them, and the users Slack resolved (name → id).

    ``<@U123|maria>`` becomes ``@maria`` (Maria is invited: Slack resolved her), ``<!here>`` ``@here`` (never
    invited: the grammar refuses channel-wide mentions), ``<#C1|sales>`` ``#sales`` and a link its address (so it
    stays out of the room name).
    """
    members: dict[str, str] = {}

    def plain(match: re.Match[str]) -> str:
        sigil, target, label = match.group(1), match.group(2), match.group(3) or ""
        if sigil == "@":
            name = (label or target).lstrip("@").lower()
            if _NAME.fullmatch(name) and _ID.fullmatch(target):
                members[name] = target
                return f"@{name}"
            return label.lstrip("@") or "someone"
        if sigil == "!":
            return "@" + (label or target).split("^", 1)[0].lstrip("@")
        if sigil == "#":
            return "#" + (label or target)
        return target

    return _REFERENCE.sub(plain, text), members


# the signature ---------------------------------------------------------------------------------------------------
class SignatureRefused(Exception):
    def __init__(self, kind: RefusalKind, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class _At(Clock):
    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


class SignatureGate:
    """The signing secrets, each bound to its workspace; a request no secret signed re-reads the secret (at most
    every ``interval``), since Slack signs with a regenerated secret at once."""

    def __init__(
        self,
        secrets: Callable[[bool], Mapping[str, tuple[str, ...]]],
        clock: Callable[[], float] = time.time,
        interval: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secrets = secrets
        self._clock = clock
        self._interval = interval
        self._monotonic = monotonic
        self._refreshed_at: float | None = None

    def team_of(self, raw: bytes, timestamp: str | None, signature: str | None) -> str:
        """The workspace whose secret signed the request; ``SignatureRefused`` when none did or it is stale."""
        if not timestamp or not signature:
            raise SignatureRefused("signature", "missing X-Slack-Signature or X-Slack-Request-Timestamp")
        timestamp = timestamp.strip()
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
            raise SignatureRefused("signature", "malformed X-Slack-Request-Timestamp")
        now = self._clock()
        if abs(now - int(timestamp)) > TOLERANCE_SECONDS:
            raise SignatureRefused("stale", f"request timestamp outside the {TOLERANCE_SECONDS} s window")
        team = _signer(raw, timestamp, signature, self._secrets(False), now)
        if team is None:
            moment = self._monotonic()
            if self._refreshed_at is None or moment - self._refreshed_at >= self._interval:
                self._refreshed_at = moment
                team = _signer(raw, timestamp, signature, self._secrets(True), now)
        if team is None:
            raise SignatureRefused("signature", "signature does not match")
        return team


def _signer(raw: bytes, timestamp: str, signature: str, teams: Mapping[str, tuple[str, ...]], now: float) -> str | None:
    """Every secret is tried, so the time taken says nothing about which workspace came close."""
    try:
        body = raw.decode("utf-8")  # what slack_sdk hashes; a body that is not UTF-8 was never signed by Slack
    except UnicodeDecodeError:
        return None
    found = None
    for team, secrets in teams.items():
        for secret in secrets:
            if SignatureVerifier(secret, clock=_At(now)).is_valid(body, timestamp, signature):
                found = team
    return found


# a signed request ------------------------------------------------------------------------------------------------
# What can stop a request before it is read: no valid signature, an unreadable body, no secret to check it with.
UNREAD = (SignatureRefused, BadRequest, ValueError, SecretError)


def sized_body(request: ApiRequest) -> bytes:
    raw = body_bytes(request)
    if len(raw) > MAX_FORM_BYTES:
        raise BadRequest("body too large")
    return raw


def signed_form(
    raw: bytes, request: ApiRequest, gate: SignatureGate, max_fields: int
) -> tuple[str, dict[str, list[str]]]:
    """The workspace whose secret signed the body, and the body's form fields; nothing is read of an unsigned body.

    Raises ``SignatureRefused``, ``BadRequest``/``ValueError`` (not a form) or ``SecretError``: see ``refused``.
    """
    headers = request.headers
    team = gate.team_of(raw, headers.get("x-slack-request-timestamp"), headers.get("x-slack-signature"))
    return team, parse_qs(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=max_fields)


def refused(exc: Exception, what: str) -> tuple[str | None, dict[str, Any]]:
    """The answer to a request stopped before it was read: 401 unsigned or stale, 400 unreadable, 503 when the
    signing secret cannot be read (Slack shows the user an error; nothing was done). With it, the refusal's kind
    for the route's metric (None: not the caller's doing)."""
    if isinstance(exc, SignatureRefused):
        logger.warning(f"slack {what} refused", extra={"reason": exc.reason})
        return exc.kind, json_response(401, {"error": exc.reason})
    if isinstance(exc, SecretError):
        logger.error(f"slack {what} not handled: no credentials", extra={"reason": str(exc)})
        return None, json_response(503, {"error": "temporarily unavailable, retry later"})
    return "malformed", json_response(400, {"error": str(exc) if isinstance(exc, BadRequest) else "body is not a form"})


# the queue message -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SlackJob:
    """A ``/whereby`` that calls Whereby, on the job queue for the worker: everything the answer needs later.

    The channel, the caller and ``response_url`` stay with the room's outcome, so a later post (the meeting's end)
    knows where to go.
    """

    caller: Caller
    text: str  # with Slack's references written out (``resolved_mentions``)
    members: Mapping[str, str] = field(default_factory=dict)  # name → Slack user id, as Slack resolved them
    response_url: str = ""
    trigger_id: str = ""
    received_at: int = 0

    @property
    def group_id(self) -> str:
        return f"slack:{self.caller.team_id}:{self.caller.channel_id}"

    @property
    def dedup_id(self) -> str:
        if _DEDUP_ID.fullmatch(self.trigger_id):
            return f"slack-{self.trigger_id}"
        return "slack-" + hashlib.sha256(self.trigger_id.encode()).hexdigest()

    def to_json(self) -> str:
        caller = self.caller
        body = {
            "team_id": caller.team_id,
            "channel_id": caller.channel_id,
            "user_id": caller.user_id,
            "user_name": caller.user_name,
            "trigger": caller.trigger,
            "text": self.text,
            "members": dict(self.members),
            "response_url": self.response_url,
            "trigger_id": self.trigger_id,
            "received_at": self.received_at,
        }
        return json.dumps({MESSAGE_FIELD: body}, separators=(",", ":"), ensure_ascii=False)


class MalformedSlackJob(ValueError):
    """A queue message that says it is a Slack command but cannot be read; retrying it cannot help."""


def slack_job(body: str) -> SlackJob | None:
    """The Slack command a queue message carries; None when the message is something else."""
    data = tagged_message(body, MESSAGE_FIELD)
    if data is None:
        return None
    try:
        job = data[MESSAGE_FIELD]
        members = job.get("members") or {}
        caller = Caller(
            team_id=str(job["team_id"]),
            channel_id=str(job["channel_id"]),
            user_id=str(job["user_id"]),
            user_name=str(job.get("user_name", "")),
            trigger=str(job.get("trigger") or "/whereby"),
        )
        parsed = SlackJob(
            caller=caller,
            text=str(job["text"]),
            members={str(k): str(v) for k, v in members.items()},
            response_url=checked_response_url(str(job["response_url"])),
            trigger_id=str(job["trigger_id"]),
            received_at=int(job["received_at"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedSlackJob(f"not a Slack command: {type(exc).__name__}") from None
    if not parsed.trigger_id:
        raise MalformedSlackJob("not a Slack command: no trigger_id")
    return parsed


def checked_response_url(url: str) -> str:
    """Slack's ``response_url``: https (plain http to this machine only, for the local stack)."""
    if not is_callback_url(url):
        raise BadRequest("response_url is not an https URL")
    return url.strip()


# the route -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SlackRuntime:
    """What the route needs from the production ports (``bridge.runtime.slack``)."""

    settings: Callable[[], Settings]
    gate: SignatureGate
    enqueue: Callable[[SlackJob], None]
    shelf: Callable[[], Shelf]  # the channel's rooms, for ``list``
    clock: Callable[[], float] = time.time


def answer(request: ApiRequest, runtime: SlackRuntime) -> dict[str, Any]:
    """The whole route: 401 unsigned or stale, 400 unreadable, otherwise 200 with a message (or empty)."""
    settings = runtime.settings().require("mattermost")  # the chat limits; a bad one fails here, naming it
    try:
        raw = sized_body(request)
        if _ssl_check(raw):
            # Slack checks the URL's certificate with an unsigned ssl_check=1 when the command is saved: an empty
            # 200, and nothing done.
            return {"statusCode": 200, "headers": {"Content-Type": "text/plain"}, "body": ""}
        team, fields = signed_form(raw, request, runtime.gate, max_fields=1000)
        caller = caller_from(fields)
        response_url = checked_response_url(_first(fields, "response_url"))
        trigger_id = _first(fields, "trigger_id").strip()
        if not trigger_id:
            raise BadRequest("missing field: trigger_id")
    except UNREAD as exc:
        kind, response = refused(exc, "command")
        if kind:
            count_reason("SlackCommandsRefused", kind)
        return response
    logger.append_keys(team_id=caller.team_id, channel_id=caller.channel_id, user_id=caller.user_id)
    sp = speech(settings.language)
    voice = replace(VOICE, speech=sp)
    if caller.team_id != team:
        # Signed with the app's secret, but from a workspace the secret is not bound to: the app is installed
        # there too. Nothing is done.
        count_reason("SlackCommandsRefused", "team-not-enabled")
        return json_response(
            200, ephemeral(sp.t("`{trigger}` is not enabled for this workspace.", trigger=caller.trigger))
        )
    limits = Limits(settings.mattermost_default_minutes, settings.mattermost_max_minutes)
    text, members = resolved_mentions(_first(fields, "text"))
    command = parse(text, limits, caller.trigger, members.keys(), quote=slack_literal, speech=sp)
    logger.append_keys(subcommand=type(command).__name__)
    count("SlackCommands")
    match command:
        case StartRoom() | EndRoom() | ExportMeetings():
            # The export's link is signed with a key only the worker reads.
            job = SlackJob(caller, text, members, response_url, trigger_id, int(runtime.clock()))
            try:
                runtime.enqueue(job)
            except PeerUnavailable as exc:
                logger.error("slack command not queued", extra={"reason": str(exc)})
                return json_response(200, ephemeral(sp.t(STORAGE_TROUBLE)))
            if isinstance(command, StartRoom):
                waiting = sp.t("Making your Whereby room…")
            elif isinstance(command, EndRoom):
                waiting = sp.t("Ending the room…")
            else:
                waiting = sp.t("Making your export link…")
            return json_response(200, ephemeral(waiting))
        case ListRooms() | ShowStats():
            try:
                if isinstance(command, ShowStats):
                    from bridge.chat.stats import channel_stats

                    return json_response(200, said(channel_stats(command, caller, runtime.shelf(), voice)))
                return json_response(200, said(list_rooms(caller, runtime.shelf(), SOURCE, voice)))
            except PeerUnavailable as exc:
                logger.error("slack command failed: storage unavailable", extra={"reason": str(exc)})
                return json_response(200, ephemeral(sp.t(STORAGE_TROUBLE)))
        case ScheduleEvery() | Unschedule() | ListSchedules() | ScheduleProblem():
            job = SlackJob(caller, text, members, response_url, trigger_id, int(runtime.clock()))
            return json_response(200, schedule_answer(command, caller, runtime, job, voice))
        case Invalid(problem=problem):
            return json_response(200, ephemeral(invalid_text(problem, caller.trigger, sp)))
        case ShowHelp():
            return json_response(200, ephemeral(help_text(caller.trigger, limits, voice)))
    raise AssertionError(f"unhandled command {command!r}")


def schedule_answer(
    command: ScheduleCommand, caller: Caller, runtime: SlackRuntime, job: SlackJob, voice: Voice = VOICE
) -> Reply:
    """Recurring meetings: a schedule is made or cancelled by the worker (the Scheduler's calls may outlast Slack's
    3 s); the list and a bad command are answered here."""
    from bridge.chat.schedules import list_schedules, problem_text, waiting_text
    from bridge.store.schedules import ScheduleStore

    if isinstance(command, ScheduleProblem):
        return ephemeral(problem_text(command, caller.trigger, voice.speech))
    if isinstance(command, ListSchedules):
        try:
            return said(list_schedules(caller, ScheduleStore(runtime.shelf().store.table), voice))
        except PeerUnavailable as exc:
            logger.error("slack command failed: storage unavailable", extra={"reason": str(exc)})
            return ephemeral(voice.speech.t(STORAGE_TROUBLE))
    try:
        runtime.enqueue(job)
    except PeerUnavailable as exc:
        logger.error("slack command not queued", extra={"reason": str(exc)})
        return ephemeral(voice.speech.t(STORAGE_TROUBLE))
    return ephemeral(waiting_text(command, voice.speech))


def caller_from(fields: Mapping[str, list[str]]) -> Caller:
    ids = {name: _first(fields, name).strip() for name in ("team_id", "channel_id", "user_id")}
    bad = [name for name, value in ids.items() if not _ID.fullmatch(value)]
    if bad:
        raise BadRequest(f"missing or malformed field(s): {', '.join(bad)}")
    trigger = _first(fields, "command").strip().lower()
    user_name = _first(fields, "user_name").strip()
    return Caller(
        **ids,
        user_name=user_name if _ID.fullmatch(user_name.replace(".", "")) else "",
        trigger=trigger if _TRIGGER.fullmatch(trigger) else "/whereby",
    )


def _ssl_check(raw: bytes) -> bool:
    return raw.startswith(b"ssl_check=1") or b"&ssl_check=1" in raw


def _first(fields: Mapping[str, list[str]], name: str) -> str:
    values = fields.get(name) or [""]
    return values[0]
