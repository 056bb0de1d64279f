"""Settings: the environment read and validated once, at cold start.

Nothing else in the package reads ``os.environ``. A bad value raises ``ConfigError`` naming the template parameter
(and its variable) and what was expected, so a misconfigured stack fails loudly on its first invocation instead of
misbehaving; each function checks only the settings it uses, so one bad value stops only what depends on it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TypeVar

DEFAULT_SLACK_API_URL = "https://slack.com/api/"
DEFAULT_WHEREBY_BASE_URL = "https://api.whereby.dev/v1"
DEFAULT_KOMMO_BASE_URL = "https://{subdomain}.kommo.com"
WHEREBY_CREATE_POINTS = 3  # the dearest call: background callers must be able to afford it above the reserve
ROOM_MODES = ("normal", "group")
RECORDING_TYPES = ("none", "local", "cloud")
_SUBDOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_RATE = re.compile(r"rate\(\s*([1-9][0-9]*)\s+(minute|hour|day)s?\s*\)")
_RATE_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


_T = TypeVar("_T")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class StageRule:
    """What room a deal gets when it enters one Kommo status."""

    status_id: int
    name: str
    duration_minutes: int = 60
    room_mode: str = "normal"
    locked: bool = False
    prefix: str = "meeting"
    recording: str = "none"
    # A date-time custom field of leads holding when the meeting takes place: the room then lives until that time
    # plus the duration (and a grace), and follows the field when it changes.
    meeting_time_field_id: int | None = None
    task: bool = False  # a Kommo task of type Meeting for the deal's responsible user, due at the meeting time
    close_on_leave: bool = False  # the room closes when the deal moves on to a stage with no rule


@dataclass(frozen=True)
class Settings:
    table_name: str
    # Each function is given only the secrets it may read (template.yaml); the others stay empty.
    whereby_secret_id: str = ""
    kommo_secret_id: str = ""
    webhook_secret_id: str = ""
    mattermost_secret_id: str = ""
    slack_secret_id: str = ""
    jobs_queue_url: str = ""
    dead_letter_queue_url: str = ""
    whereby_base_url: str = DEFAULT_WHEREBY_BASE_URL
    kommo_subdomain: str = ""
    kommo_account_id: int | None = None
    kommo_base_url: str = DEFAULT_KOMMO_BASE_URL
    stage_rules: Mapping[int, StageRule] = field(default_factory=dict)
    closed_status_ids: frozenset[int] = frozenset({142, 143})
    meeting_field_id: int | None = None
    kommo_requests_per_second: float = 3.0
    kommo_reconcile_requests_per_second: float = 1.0
    reconcile_period_seconds: int = 600
    reconcile_max_pages: int = 20
    mattermost_default_minutes: int = 60
    mattermost_max_minutes: int = 480
    mattermost_team_ids: frozenset[str] = frozenset()
    sweep_max_deletes: int = 40
    sweep_max_pages: int = 5
    secret_max_age_seconds: int = 300
    whereby_points_per_minute: int = 100  # 0: no shared budget, every caller calls Whereby directly
    whereby_chat_reserve_points: int = 30
    whereby_budget_window_seconds: float = 60.0  # Whereby's minute; tests and benchmarks shorten it
    problems: Mapping[str, str] = field(default_factory=dict)  # area → what is wrong with its settings
    # The API's own URL: the recording links our notes carry point there.
    api_base_url: str = ""
    recording_retention_days: int = 90
    # Days a meeting's session record (times, minutes, people's names) is kept: /whereby stats and export read them.
    session_retention_days: int = 90
    whereby_webhook_secret_id: str = ""  # the signing secret(s) of Whereby's webhook: the events route only
    chat_bot_secret_id: str = ""  # the optional bot tokens that post and edit the chat rooms' posts
    action_key_secret_id: str = ""  # the key that signs the End buttons' context
    slack_api_url: str = DEFAULT_SLACK_API_URL  # Slack's Web API, ending in "/" (a local stack's simulator)
    # The catalogue language ("en", "es", "pt_BR", "ru") of a reader whose own language is not known
    language: str = "en"
    # Recurring meetings (/whereby every): the stack's Scheduler group, the role it invokes with, the function it
    # invokes, the caps and how long before the meeting its room is posted. No group: the commands are not set up.
    schedule_group: str = ""
    scheduler_role_arn: str = ""
    schedule_fire_arn: str = ""
    max_schedules_per_channel: int = 5
    max_schedules_per_stack: int = 100
    schedule_lead_minutes: int = 5

    def require(self, *areas: str) -> Settings:
        """These settings, or a ``ConfigError`` naming every bad parameter of the areas this function uses."""
        wrong = [self.problems[a] for a in areas if a in self.problems]
        if wrong:
            raise ConfigError("; ".join(wrong))
        return self

    @property
    def kommo_api_url(self) -> str:
        return self.kommo_base_url.replace("{subdomain}", self.kommo_subdomain).rstrip("/")


def _text(env: Mapping[str, str], name: str, default: str | None = None) -> str:
    value = env.get(name, "").strip()
    if value:
        return value
    if default is None:
        raise ConfigError(f"{name} is required")
    return default


def _int(env: Mapping[str, str], name: str, default: int | None, minimum: int = 0) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _positive_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {value}")
    return value


def _rate_seconds(env: Mapping[str, str], name: str, default: int) -> int:
    """Seconds between runs of an EventBridge ``rate(N minutes|hours|days)`` expression."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    match = _RATE.fullmatch(raw)
    if not match:
        raise ConfigError(f"{name} must be rate(N minutes), rate(N hours) or rate(N days), got {raw!r}")
    return int(match.group(1)) * _RATE_UNIT_SECONDS[match.group(2)]


def _id_set(env: Mapping[str, str], name: str, default: str) -> frozenset[int]:
    raw = env.get(name, default)
    try:
        return frozenset(int(part) for part in raw.replace(" ", "").split(",") if part)
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated status ids, got {raw!r}") from None


def _stage_rule(status: str, spec: object) -> StageRule:
    where = f"StageRules[{status!r}]"
    if not isinstance(spec, dict):
        raise ConfigError(f'{where} must be an object like {{"name": "Demo", "duration_minutes": 60}}')
    unknown = set(spec) - {"name", "duration_minutes", "room_mode", "locked", "prefix", "recording", *_MEETING_KEYS}
    if unknown:
        raise ConfigError(f"{where} has unknown keys {sorted(unknown)}")
    try:
        status_id = int(status)
    except ValueError:
        raise ConfigError(f"STAGE_RULES keys must be Kommo status ids, got {status!r}") from None
    duration = spec.get("duration_minutes", 60)
    if not isinstance(duration, int) or isinstance(duration, bool) or not 5 <= duration <= 60 * 24 * 30:
        raise ConfigError(f"{where}.duration_minutes must be a whole number of minutes from 5 to 43200")
    room_mode = spec.get("room_mode", "normal")
    if room_mode not in ROOM_MODES:
        raise ConfigError(f"{where}.room_mode must be one of {ROOM_MODES}")
    recording = spec.get("recording", "none")
    if recording not in RECORDING_TYPES:
        raise ConfigError(f"{where}.recording must be one of {RECORDING_TYPES}")
    locked = spec.get("locked", False)
    if not isinstance(locked, bool):
        raise ConfigError(f"{where}.locked must be true or false")
    name = str(spec.get("name") or f"stage {status_id}")
    prefix = str(spec.get("prefix") or name)
    field_id, task, close_on_leave = _meeting_keys(where, spec)
    return StageRule(status_id, name, duration, room_mode, locked, prefix, recording, field_id, task, close_on_leave)


_MEETING_KEYS = ("meeting_time_field_id", "task", "close_on_leave")


def _meeting_keys(where: str, spec: Mapping[str, object]) -> tuple[int | None, bool, bool]:
    field_id = spec.get("meeting_time_field_id")
    if field_id is not None and (not isinstance(field_id, int) or isinstance(field_id, bool) or field_id <= 0):
        raise ConfigError(f"{where}.meeting_time_field_id must be the numeric id of a date-time field of leads")
    flags = []
    for key in ("task", "close_on_leave"):
        value = spec.get(key, False)
        if not isinstance(value, bool):
            raise ConfigError(f"{where}.{key} must be true or false")
        flags.append(value)
    if flags[0] and field_id is None:
        raise ConfigError(f"{where}.task needs meeting_time_field_id: the task is due at the meeting time")
    return field_id, flags[0], flags[1]


def parse_stage_rules(raw: str) -> dict[int, StageRule]:
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"STAGE_RULES must be JSON: {exc.msg} at character {exc.pos}") from None
    if not isinstance(data, dict):
        raise ConfigError("STAGE_RULES must be a JSON object keyed by Kommo status id")
    rules = {rule.status_id: rule for rule in (_stage_rule(k, v) for k, v in data.items())}
    return rules


def _check_kommo_account(subdomain: str, account_id: int | None, base_url: str, has_rules: bool) -> None:
    """Kommo settings that cannot work fail here, not as dead-lettered jobs for ``https://.kommo.com``."""
    if subdomain and not _SUBDOMAIN.fullmatch(subdomain):
        raise ConfigError(f"KOMMO_SUBDOMAIN must be the account's subdomain (letters, digits, -), got {subdomain!r}")
    uses_kommo = has_rules or account_id is not None
    if uses_kommo and not subdomain and "{subdomain}" in base_url:
        raise ConfigError(
            "KOMMO_SUBDOMAIN is required when STAGE_RULES or KOMMO_ACCOUNT_ID are set: the bridge calls"
            f" {base_url} and webhooks are matched to the account by it"
        )


# The template parameter behind each variable, so that an error names what the operator sets.
PARAMETERS = {
    "KOMMO_SUBDOMAIN": "KommoSubdomain",
    "KOMMO_ACCOUNT_ID": "KommoAccountId",
    "KOMMO_BASE_URL": "KommoBaseUrl",
    "STAGE_RULES": "StageRules",
    "CLOSED_STATUS_IDS": "ClosedStatusIds",
    "KOMMO_MEETING_FIELD_ID": "MeetingFieldId",
    "WHEREBY_BASE_URL": "WherebyBaseUrl",
    "MATTERMOST_DEFAULT_MINUTES": "MattermostDefaultMinutes",
    "MATTERMOST_MAX_MINUTES": "MattermostMaxMinutes",
    "MATTERMOST_TEAM_IDS": "MattermostTeamIds",
    "SWEEP_MAX_DELETES": "SweepMaxDeletes",
    "RECONCILE_SCHEDULE": "ReconcileSchedule",
    "WHEREBY_POINTS_PER_MINUTE": "WherebyPointsPerMinute",
    "WHEREBY_CHAT_RESERVE_POINTS": "WherebyChatReservePoints",
    "RECORDING_RETENTION_DAYS": "RecordingRetentionDays",
    "SESSION_RETENTION_DAYS": "SessionRetentionDays",
    "SLACK_API_URL": "SlackApiUrl",
    "DEFAULT_LANGUAGE": "Language",
    "MAX_SCHEDULES_PER_CHANNEL": "MaxSchedulesPerChannel",
    "MAX_SCHEDULES_PER_STACK": "MaxSchedulesPerStack",
    "SCHEDULE_LEAD_MINUTES": "ScheduleLeadMinutes",
}
_VARIABLE = re.compile(r"\b(" + "|".join(PARAMETERS) + r")\b")


def named(message: str) -> str:
    """``STAGE_RULES must …`` → ``StageRules (STAGE_RULES) must …``: the parameter first, the variable beside it."""
    return _VARIABLE.sub(lambda m: f"{PARAMETERS[m.group(1)]} ({m.group(1)})", message)


def settings_from(env: Mapping[str, str]) -> Settings:
    """The settings; a bad value of one area (Kommo, Mattermost, …) is kept in ``problems`` under that area.

    Each function then requires only the areas it uses (``Settings.require``), so a bad Mattermost setting stops
    the slash command, not the Kommo webhooks.
    """
    problems: dict[str, str] = {}

    def area(name: str, parse: Callable[[], _T], fallback: _T) -> _T:
        try:
            return parse()
        except ConfigError as exc:
            problems[name] = problems.get(name, "") + ("; " if name in problems else "") + named(str(exc))
            return fallback

    minutes = area("mattermost", lambda: _mattermost_minutes(env), (60, 480))
    points, reserve = area("whereby", lambda: _whereby_points(env), (0, 0))
    no_stages: tuple[dict[int, StageRule], frozenset[int]] = ({}, frozenset({142, 143}))
    stage_rules, closed = area("kommo", lambda: _stages(env), no_stages)
    no_account: tuple[str, int | None, str] = ("", None, DEFAULT_KOMMO_BASE_URL)
    subdomain, account_id, base_url = area("kommo", lambda: _kommo_account(env, bool(stage_rules)), no_account)
    return Settings(
        table_name=_text(env, "TABLE_NAME"),
        whereby_secret_id=_text(env, "WHEREBY_SECRET_ID", ""),
        kommo_secret_id=_text(env, "KOMMO_SECRET_ID", ""),
        webhook_secret_id=_text(env, "WEBHOOK_SECRET_ID", ""),
        mattermost_secret_id=_text(env, "MATTERMOST_SECRET_ID", ""),
        slack_secret_id=_text(env, "SLACK_SECRET_ID", ""),
        jobs_queue_url=_text(env, "JOBS_QUEUE_URL", ""),
        dead_letter_queue_url=_text(env, "DEAD_LETTER_QUEUE_URL", ""),
        whereby_base_url=area("whereby", lambda: _url(env, "WHEREBY_BASE_URL", DEFAULT_WHEREBY_BASE_URL), ""),
        kommo_subdomain=subdomain,
        kommo_account_id=account_id,
        kommo_base_url=base_url,
        stage_rules=stage_rules,
        closed_status_ids=closed,
        meeting_field_id=area("kommo", lambda: _int(env, "KOMMO_MEETING_FIELD_ID", None, 1), None),
        kommo_requests_per_second=area("kommo", lambda: _positive_float(env, "KOMMO_REQUESTS_PER_SECOND", 3.0), 3.0),
        kommo_reconcile_requests_per_second=area(
            "reconcile", lambda: _positive_float(env, "KOMMO_RECONCILE_REQUESTS_PER_SECOND", 1.0), 1.0
        ),
        reconcile_period_seconds=area("reconcile", lambda: _rate_seconds(env, "RECONCILE_SCHEDULE", 600), 600),
        reconcile_max_pages=area("reconcile", lambda: _int(env, "RECONCILE_MAX_PAGES", 20, 1) or 20, 20),
        mattermost_default_minutes=minutes[0],
        mattermost_max_minutes=minutes[1],
        mattermost_team_ids=frozenset(t for t in env.get("MATTERMOST_TEAM_IDS", "").replace(" ", "").split(",") if t),
        sweep_max_deletes=area("sweep", lambda: _int(env, "SWEEP_MAX_DELETES", 40, 1) or 40, 40),
        sweep_max_pages=area("sweep", lambda: _int(env, "SWEEP_MAX_PAGES", 5, 1) or 5, 5),
        secret_max_age_seconds=_int(env, "SECRET_MAX_AGE_SECONDS", 300, 0) or 0,
        whereby_points_per_minute=points,
        whereby_chat_reserve_points=reserve,
        whereby_budget_window_seconds=area(
            "whereby", lambda: _positive_float(env, "WHEREBY_BUDGET_WINDOW_SECONDS", 60.0), 60.0
        ),
        problems=problems,
        api_base_url=env.get("API_BASE_URL", "").strip().rstrip("/"),
        recording_retention_days=area("recordings", lambda: _int(env, "RECORDING_RETENTION_DAYS", 90, 1) or 90, 90),
        session_retention_days=area("sessions", lambda: _int(env, "SESSION_RETENTION_DAYS", 90, 1) or 90, 90),
        whereby_webhook_secret_id=_text(env, "WHEREBY_WEBHOOK_SECRET_ID", ""),
        chat_bot_secret_id=_text(env, "CHAT_BOT_SECRET_ID", ""),
        action_key_secret_id=_text(env, "ACTION_KEY_SECRET_ID", ""),
        slack_api_url=area("slack", lambda: _url(env, "SLACK_API_URL", DEFAULT_SLACK_API_URL) + "/", ""),
        language=_language(env, area),
        schedule_group=_text(env, "SCHEDULE_GROUP", ""),
        scheduler_role_arn=_text(env, "SCHEDULER_ROLE_ARN", ""),
        schedule_fire_arn=_text(env, "SCHEDULE_FIRE_ARN", ""),
        max_schedules_per_channel=area("schedules", lambda: _int(env, "MAX_SCHEDULES_PER_CHANNEL", 5, 0) or 0, 5),
        max_schedules_per_stack=area("schedules", lambda: _int(env, "MAX_SCHEDULES_PER_STACK", 100, 0) or 0, 100),
        schedule_lead_minutes=area("schedules", lambda: _int(env, "SCHEDULE_LEAD_MINUTES", 5, 1) or 5, 5),
    )


def _language(env: Mapping[str, str], area: Callable[[str, Callable[[], str], str], str]) -> str:
    """A bad ``Language`` stops every function that speaks (Kommo's notes, both chats), each naming it."""
    from bridge.core.i18n import setting_language

    def parse() -> str:
        value = env.get("DEFAULT_LANGUAGE", "").strip() or "en"
        try:
            return setting_language(value)
        except ValueError as exc:
            raise ConfigError(f"DEFAULT_LANGUAGE {exc}") from None

    language = "en"
    for name in ("kommo", "mattermost", "slack"):
        language = area(name, parse, "en")
    return language


def _mattermost_minutes(env: Mapping[str, str]) -> tuple[int, int]:
    minimum_minutes = 5
    default_minutes = _int(env, "MATTERMOST_DEFAULT_MINUTES", 60, minimum_minutes) or 60
    max_minutes = _int(env, "MATTERMOST_MAX_MINUTES", 480, minimum_minutes) or 480
    if default_minutes > max_minutes:
        raise ConfigError("MATTERMOST_DEFAULT_MINUTES must not exceed MATTERMOST_MAX_MINUTES")
    return default_minutes, max_minutes


def _whereby_points(env: Mapping[str, str]) -> tuple[int, int]:
    points = _int(env, "WHEREBY_POINTS_PER_MINUTE", 100, 0) or 0
    reserve = _int(env, "WHEREBY_CHAT_RESERVE_POINTS", 30, 0) or 0
    if points and reserve + WHEREBY_CREATE_POINTS > points:
        raise ConfigError(
            f"WHEREBY_CHAT_RESERVE_POINTS must leave the background at least {WHEREBY_CREATE_POINTS} points of"
            f" WHEREBY_POINTS_PER_MINUTE ({points}), got {reserve}"
        )
    return points, reserve


def _stages(env: Mapping[str, str]) -> tuple[dict[int, StageRule], frozenset[int]]:
    stage_rules = parse_stage_rules(env.get("STAGE_RULES", ""))
    closed = _id_set(env, "CLOSED_STATUS_IDS", "142,143")
    overlap = closed & set(stage_rules)
    if overlap:
        raise ConfigError(f"CLOSED_STATUS_IDS and STAGE_RULES share status ids {sorted(overlap)}")
    return stage_rules, closed


def _kommo_account(env: Mapping[str, str], has_rules: bool) -> tuple[str, int | None, str]:
    subdomain = _text(env, "KOMMO_SUBDOMAIN", "").lower()
    account_id = _int(env, "KOMMO_ACCOUNT_ID", None, 1)
    base_url = _url(env, "KOMMO_BASE_URL", DEFAULT_KOMMO_BASE_URL)
    _check_kommo_account(subdomain, account_id, base_url, has_rules)
    return subdomain, account_id, base_url


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    url = _text(env, name, default).rstrip("/")
    if not url.startswith(("https://", "http://")):
        raise ConfigError(f"{name} must be an http(s) URL, got {url!r}")
    return url


@lru_cache(maxsize=1)
def load_settings() -> Settings:
    """The settings of this process, read once; tests call ``load_settings.cache_clear()``."""
    return settings_from(os.environ)
