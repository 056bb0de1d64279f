"""The production ports, built once per Lambda container and reused across invocations: the one place where the
wings meet.

Use-cases take their ports as arguments; handlers get them from here. Each port imports its wing when it is first
built, so a function imports only the wings it uses (the Kommo intake never loads ``requests`` or the Whereby
client), and a handler that never needs Kommo never reads its token.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING

import boto3
from aws_lambda_powertools.utilities import parameters

from bridge.core.config import Settings, load_settings
from bridge.core.retry import RetryPolicy

if TYPE_CHECKING:
    from bridge.chat.export import ExportRuntime
    from bridge.chat.live_posts import Teller
    from bridge.chat.mattermost import CommandRuntime
    from bridge.chat.mattermost_action import ActionRuntime as MattermostActionRuntime
    from bridge.chat.mattermost_bot import MattermostBot, UserLocales
    from bridge.chat.rooms import Caller, CommandPorts
    from bridge.chat.schedule_fire import FirePorts
    from bridge.chat.schedules import SchedulePorts
    from bridge.chat.slack import SlackRuntime
    from bridge.chat.slack_action import ActionRuntime as SlackActionRuntime
    from bridge.chat.slack_bot import SlackBot
    from bridge.chat.slack_worker import SlackWorkerPorts, UserLanguages
    from bridge.core.i18n import Speech
    from bridge.kommo.auth import KommoTokens
    from bridge.kommo.client import KommoClient
    from bridge.kommo.intake import IntakeRuntime
    from bridge.kommo.job_runner import WorkerRuntime
    from bridge.kommo.jobs import JobQueue
    from bridge.kommo.recordings import ReadyPorts
    from bridge.store.meetings import MeetingsStore, Room, SessionRecord
    from bridge.store.scheduler import EventBridgeScheduler
    from bridge.whereby.budget import PointsBudget, Spender
    from bridge.whereby.client import WherebyClient
    from bridge.whereby.events import EventsRuntime
    from bridge.whereby.recording_link import LinkPorts

# Behind API Gateway (29 s) and Mattermost (30 s) a caller is waiting: short timeouts, few retries.
# Worst case two tries of 3.05 + 6 s plus a 3 s wait: about 21 s, inside the function's 25 s.
INTERACTIVE = RetryPolicy(attempts=2, connect_timeout=3.05, read_timeout=6.0, backoff=0.3, max_wait=3.0)
# In the worker nobody waits; the queue retries later, so one call may take longer.
BACKGROUND = RetryPolicy(attempts=3, connect_timeout=3.05, read_timeout=15.0, backoff=0.5, max_wait=10.0)
# The reconciliation runs again in one period and resumes from its checkpoint: one retry, then it stops.
RECONCILE = RetryPolicy(attempts=2, connect_timeout=3.05, read_timeout=15.0, backoff=0.5, max_wait=5.0)


def settings() -> Settings:
    return load_settings()


@lru_cache(maxsize=1)
def job_queue() -> JobQueue:
    from bridge.kommo.jobs import JobQueue

    return JobQueue(settings().jobs_queue_url, boto3.client("sqs"))


@lru_cache(maxsize=1)
def dead_letter_queue() -> JobQueue:
    from bridge.kommo.jobs import JobQueue

    return JobQueue(settings().jobs_queue_url, boto3.client("sqs"), dead_letter_url=settings().dead_letter_queue_url)


@lru_cache(maxsize=1)
def store() -> MeetingsStore:
    from bridge.store.meetings import MeetingsStore

    s = settings()
    return MeetingsStore(
        s.table_name, boto3.resource("dynamodb"), session_retention_seconds=s.session_retention_days * 24 * 3600
    )


def whereby(policy: RetryPolicy | None = None, points: Spender | None = None) -> WherebyClient:
    """The Whereby client (``BACKGROUND`` policy unless told); with ``points`` each call is paid from the budget."""
    from bridge.store.credentials import whereby_api_key

    return _whereby(whereby_api_key(settings()), policy or BACKGROUND).charging(points)


@lru_cache(maxsize=1)
def points_budget() -> PointsBudget | None:
    """The shared count of Whereby's points, or None when ``WHEREBY_POINTS_PER_MINUTE`` is 0."""
    from bridge.whereby.budget import PointsBudget

    s = settings()
    if not s.whereby_points_per_minute:
        return None
    return PointsBudget(
        store().table, s.whereby_points_per_minute, s.whereby_chat_reserve_points, s.whereby_budget_window_seconds
    )


def background_points(wait_seconds: float = 0.0) -> Spender | None:
    """Points for the worker and the sweeper: they leave the chat reserve and wait ``wait_seconds`` at most."""
    budget = points_budget()
    return budget.background(budget.clock() + wait_seconds) if budget else None


def interactive_points() -> Spender | None:
    """Points for a person waiting on the slash command: the reserve is theirs too."""
    budget = points_budget()
    return budget.interactive() if budget else None


@lru_cache(maxsize=4)
def _whereby(api_key: str, policy: RetryPolicy) -> WherebyClient:
    from bridge.whereby.client import WherebyClient

    return WherebyClient(settings().whereby_base_url, api_key, policy)


@lru_cache(maxsize=1)
def kommo_tokens() -> KommoTokens:
    from bridge.kommo.auth import KommoTokens, SecretWriter, TokenLease

    s = settings()
    return KommoTokens(s, TokenLease(store().table), SecretWriter(s.kommo_secret_id, boto3.client("secretsmanager")))


@lru_cache(maxsize=1)
def kommo() -> KommoClient:
    from bridge.kommo.client import KommoClient

    s = settings()
    return KommoClient(s.kommo_api_url, kommo_tokens(), s.kommo_requests_per_second, BACKGROUND)


@lru_cache(maxsize=1)
def kommo_reconcile() -> KommoClient:
    """The reconciler's own Kommo client, spaced at its own rate: with the two workers' 2 x 3/s, 1/s keeps the
    integration within Kommo's 7 requests/s."""
    from bridge.kommo.client import KommoClient

    s = settings()
    return KommoClient(s.kommo_api_url, kommo_tokens(), s.kommo_reconcile_requests_per_second, RECONCILE)


# What each route needs, wired here so that the wings never import this module. -----------------------------------
@lru_cache(maxsize=1)
def intake() -> IntakeRuntime:
    """The Kommo webhook routes: the settings, the webhook tokens and the job queue; no peer client."""
    from bridge.kommo.intake import IntakeRuntime
    from bridge.store.credentials import webhook_tokens

    return IntakeRuntime(settings=settings, tokens=lambda: webhook_tokens(settings()), queue=job_queue)


@lru_cache(maxsize=1)
def worker() -> WorkerRuntime:
    from bridge.kommo.deal_rooms import DealPorts
    from bridge.kommo.job_runner import WorkerRuntime

    def deal_ports(points: Spender | None) -> DealPorts:
        return DealPorts(
            store=store(),
            whereby=whereby(points=points),
            kommo=kommo(),
            chat_session_ended=chat_session_ended,
            speech=kommo_speech,
        )

    def chat_job(body: str) -> Callable[[], str] | None:
        if '"slack_command"' not in body and '"slack_action"' not in body:
            return None  # a Kommo job or a Whereby event: the chat wing is never loaded for them
        from bridge.chat.slack_worker import runner_for

        return runner_for(body, slack_worker_ports)

    return WorkerRuntime(
        settings=settings,
        deal_ports=deal_ports,
        job_queue=job_queue,
        dead_letter_queue=dead_letter_queue,
        background_points=background_points,
        chat_job=chat_job,
    )


def slack_worker_ports() -> SlackWorkerPorts:
    """A Slack command in the worker: someone is waiting, so Whereby is paid from the chat reserve."""
    from bridge.chat.grammar import Limits
    from bridge.chat.rooms import CommandPorts
    from bridge.chat.slack_worker import SlackWorkerPorts, webhook_post
    from bridge.store.credentials import action_keys

    s = settings().require("mattermost", "whereby", "slack")
    return SlackWorkerPorts(
        rooms=CommandPorts(store=store(), whereby=whereby(INTERACTIVE, interactive_points())),
        post=webhook_post,
        limits=Limits(s.mattermost_default_minutes, s.mattermost_max_minutes),
        bot=slack_bot,
        action_keys=lambda: action_keys(settings()),
        api_base=s.api_base_url,
        user_language=slack_languages(),
        language=s.language,
        schedules=slack_schedules,
    )


@lru_cache(maxsize=1)
def slack_languages() -> UserLanguages:
    """Each Slack user's language, read through the workspace's bot once an hour per container."""
    from bridge.chat.slack_worker import UserLanguages

    return UserLanguages(bot=slack_bot, fallback=lambda: settings().language)


def slack_schedules(team_id: str) -> SchedulePorts | None:
    """Slack's: the workspace's bot posts the meetings. Slack's slash command says nothing of the caller's role in
    the channel, so only a schedule's creator cancels it."""
    return schedule_ports(has_bot=lambda: slack_bot(team_id) is not None, is_admin=lambda caller: False)


def slack_bot(team_id: str) -> SlackBot | None:
    """The workspace's Slack bot, or None without a token for it. A bot secret that cannot be read is logged and
    treated as no bot: the optional live post must never fail a command."""
    from bridge.chat.slack_bot import SlackBot
    from bridge.core.observability import count, logger
    from bridge.store.credentials import SecretError, chat_bots

    try:
        token = chat_bots(settings()).slack_tokens.get(team_id)
    except SecretError as exc:
        count("ChatBotFallbacks")
        logger.error("chat bot secret unreadable: rooms are posted without the bot", extra={"reason": str(exc)})
        return None
    return SlackBot(settings().slack_api_url, token) if token else None


def chat_session_ended(room: Room, record: SessionRecord) -> int:
    """A chat room's session ended: its channel's post follows (``bridge.chat.live_posts``)."""
    from bridge.chat.live_posts import LivePorts, session_ended

    return session_ended(room, record, LivePorts(store=store(), tellers=chat_tellers()))


def chat_tellers() -> dict[str, Teller]:
    """How each chat platform tells a channel that its meeting ended, by the room's source."""
    tellers: dict[str, Teller] = {}
    # Slack: the bot's post edited, or a follow-up through the command's response_url.
    from bridge.chat.slack_worker import tell_session_ended

    tellers["slack"] = lambda room, record, repeat: tell_session_ended(room, record, repeat, slack_worker_ports)
    tellers["mattermost"] = mattermost_teller()
    return tellers


def mattermost_teller() -> Teller:
    from functools import partial

    from bridge.chat.mattermost_bot import post_response_url
    from bridge.chat.mattermost_live import MattermostLivePorts, tell

    ports = MattermostLivePorts(bot=mattermost_bot, follow_up=post_response_url, language=lambda: settings().language)
    return partial(tell, ports=ports)


def mattermost_bot() -> MattermostBot | None:
    """The Mattermost bot, or None when ``ChatBotSecret`` holds none (or this function may not read it)."""
    from bridge.store.credentials import chat_bots

    bots = chat_bots(settings())
    return _mattermost_bot(bots.mattermost_url, bots.mattermost_token) if bots.mattermost else None


@lru_cache(maxsize=2)
def _mattermost_bot(url: str, token: str) -> MattermostBot:
    from bridge.chat.mattermost_bot import MattermostBot

    return MattermostBot(url, token)


@lru_cache(maxsize=1)
def mattermost_locales() -> UserLocales:
    """Each Mattermost user's locale, read through the bot once per user and container."""
    from bridge.chat.mattermost_bot import UserLocales

    return UserLocales(mattermost_bot)


def action_keys() -> tuple[str, ...]:
    from bridge.store.credentials import action_keys as read

    return read(settings())


@lru_cache(maxsize=1)
def mattermost() -> CommandRuntime:
    """The slash command; its token gate lives as long as the container, so a rotated token is read once."""
    from bridge.chat.mattermost import CommandRuntime, TokenGate
    from bridge.store.credentials import mattermost_team_tokens

    gate = TokenGate(lambda fresh: mattermost_team_tokens(settings(), force_fetch=fresh))
    return CommandRuntime(
        settings=settings,
        token_gate=gate,
        ports=chat_command_ports,
        action_keys=action_keys,
        bot=mattermost_bot,
        locale=mattermost_locales(),
        schedules=mattermost_schedules,
    )


def chat_command_ports() -> CommandPorts:
    """A person is waiting: the command may spend the points the background leaves in reserve."""
    from bridge.chat.rooms import CommandPorts

    return CommandPorts(store=store(), whereby=whereby(INTERACTIVE, interactive_points()))


@lru_cache(maxsize=1)
def mattermost_action() -> MattermostActionRuntime:
    """The End button's clicks: the signing keys and the command's ports (a person is waiting on the click)."""
    from bridge.chat.mattermost_action import ActionRuntime

    return ActionRuntime(settings=settings, keys=action_keys, ports=chat_command_ports, locale=mattermost_locales())


@lru_cache(maxsize=1)
def slack() -> SlackRuntime:
    """The Slack slash command: the signing secrets, the job queue and the channel's rooms; no HTTP client."""
    from bridge.chat.rooms import ShelfPorts
    from bridge.chat.slack import SignatureGate, SlackJob, SlackRuntime
    from bridge.store.credentials import slack_team_secrets

    def enqueue(job: SlackJob) -> None:
        job_queue().send_message(job.to_json(), job.group_id, job.dedup_id)

    gate = SignatureGate(lambda fresh: slack_team_secrets(settings(), force_fetch=fresh))
    return SlackRuntime(settings=settings, gate=gate, enqueue=enqueue, shelf=lambda: ShelfPorts(store=store()))


@lru_cache(maxsize=1)
def slack_action() -> SlackActionRuntime:
    """The Slack buttons' route: the signing secrets, the End buttons' keys and the job queue; no HTTP client."""
    from bridge.chat.slack import SignatureGate
    from bridge.chat.slack_action import ActionRuntime, SlackAction
    from bridge.store.credentials import action_keys, slack_team_secrets

    def enqueue(action: SlackAction) -> None:
        job_queue().send_message(action.to_json(), action.group_id, action.dedup_id)

    gate = SignatureGate(lambda fresh: slack_team_secrets(settings(), force_fetch=fresh))
    return ActionRuntime(gate=gate, keys=lambda fresh: action_keys(settings(), force_fetch=fresh), enqueue=enqueue)


@lru_cache(maxsize=1)
def chat_export() -> ExportRuntime:
    """``GET /chat/export``: the signing keys and a channel's meetings; no HTTP client, no peer."""
    from bridge.chat.export import ExportRuntime

    return ExportRuntime(keys=action_keys, store=store)


@lru_cache(maxsize=1)
def recording_links() -> LinkPorts:
    """``GET /recordings/{id}``: the recording records, and Whereby for a known id only (a person is waiting)."""
    from bridge.store.recordings import RecordingsStore
    from bridge.whereby.recording_link import LinkPorts

    return LinkPorts(
        recordings=RecordingsStore(store()),
        whereby=lambda: whereby(INTERACTIVE, interactive_points()),
        language=settings().language,
    )


def recording_ports() -> ReadyPorts:
    """What ``bridge.kommo.recordings.on_recording_ready`` needs in the worker."""
    from bridge.kommo.recordings import ReadyPorts

    return ReadyPorts(store=store(), kommo=kommo(), settings=settings(), speech=kommo_speech)


def kommo_speech() -> Speech:
    """The language of the deals' notes and tasks: the Kommo account's, else the stack's ``Language``."""
    from bridge.kommo.deal_rooms import account_speech

    return account_speech(kommo(), settings().language)


@lru_cache(maxsize=1)
def whereby_events() -> EventsRuntime:
    """The Whereby webhook route: the signing secrets, this stack's room keys and the job queue; no peer client."""
    from bridge.store.credentials import whereby_webhook_secrets
    from bridge.store.meetings import stack_tag
    from bridge.whereby.events import EventMessage, EventsRuntime

    def is_ours(room_key: str) -> bool:
        return room_key.startswith("z" + stack_tag(settings().table_name))

    def enqueue(message: EventMessage) -> None:
        job_queue().send_message(message.to_json(), message.group_id, message.dedup_id)

    return EventsRuntime(
        settings=settings, secrets=lambda: whereby_webhook_secrets(settings()), is_ours=is_ours, enqueue=enqueue
    )


def room_expired() -> Callable[[Room], None]:
    """For the sweep: a deal's room whose time passed goes to the worker, which tells a no-show (the sweep itself
    never imports the Kommo wing)."""
    from bridge.whereby.events import expired_room_message

    def hand_over(room: Room) -> None:
        message = expired_room_message(room, time.time())
        if message is not None:
            job_queue().send_message(message.to_json(), message.group_id, message.dedup_id)

    return hand_over


# Recurring meetings ---------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def scheduler() -> EventBridgeScheduler:
    from bridge.store.scheduler import EventBridgeScheduler, SchedulerTarget

    s = settings()
    target = SchedulerTarget(
        s.schedule_group, s.scheduler_role_arn, s.schedule_fire_arn, max_age_seconds=s.schedule_lead_minutes * 60
    )
    return EventBridgeScheduler(boto3.client("scheduler"), target)


def schedule_ports(has_bot: Callable[[], bool], is_admin: Callable[[Caller], bool]) -> SchedulePorts | None:
    """The recurring meetings' ports; None when this function was not given the Scheduler's group."""
    from bridge.chat.schedules import SchedulePorts
    from bridge.store.schedules import ScheduleStore

    s = settings().require("schedules")
    if not (s.schedule_group and s.scheduler_role_arn and s.schedule_fire_arn):
        return None
    return SchedulePorts(
        store=ScheduleStore(store().table),
        scheduler=scheduler(),
        channel_cap=s.max_schedules_per_channel,
        stack_cap=s.max_schedules_per_stack,
        lead_minutes=s.schedule_lead_minutes,
        has_bot=has_bot,
        is_admin=is_admin,
    )


def mattermost_schedules() -> SchedulePorts | None:
    """Mattermost's: the bot posts the meetings, and tells a channel admin (the command carries no role)."""
    from bridge.core.observability import logger
    from bridge.store.credentials import SecretError

    def bot() -> MattermostBot | None:
        try:
            return mattermost_bot()
        except SecretError as exc:
            logger.error("chat bot secret unreadable", extra={"reason": str(exc)})
            return None

    def is_admin(caller: Caller) -> bool:
        from bridge.core.errors import BridgeError

        found = bot()
        try:
            return found is not None and found.is_channel_admin(caller.channel_id, caller.user_id)
        except BridgeError as exc:
            logger.warning("channel membership not read: not an admin", extra={"reason": str(exc)})
            return False

    return schedule_ports(has_bot=lambda: bot() is not None, is_admin=is_admin)


def schedule_fire_ports() -> FirePorts:
    """A recurring meeting's room: made in the background (nobody waits), posted by the bot or the webhook."""
    from bridge.chat.rooms import CommandPorts
    from bridge.chat.schedule_fire import FirePorts, post_webhook
    from bridge.store.schedules import ScheduleStore

    s = settings().require("whereby", "schedules")

    def slack(team_id: str) -> SlackBot | None:
        return slack_bot(team_id)

    return FirePorts(
        schedules=ScheduleStore(store().table),
        scheduler=scheduler(),
        rooms=CommandPorts(store=store(), whereby=whereby(BACKGROUND, background_points())),
        webhook_post=post_webhook,
        lead_minutes=s.schedule_lead_minutes,
        language=s.language,
        mattermost_bot=mattermost_bot,
        slack_bot=slack,
        action_keys=action_keys,
        api_base=s.api_base_url,
    )


def reset() -> None:
    """Forget every cached port and setting (tests, and the local stack between configurations)."""
    for cached in (
        load_settings,
        job_queue,
        dead_letter_queue,
        store,
        _whereby,
        points_budget,
        kommo_tokens,
        kommo,
        kommo_reconcile,
        intake,
        worker,
        mattermost,
        mattermost_action,
        _mattermost_bot,
        mattermost_locales,
        slack,
        slack_action,
        slack_languages,
        recording_links,
        chat_export,
        whereby_events,
        scheduler,
    ):
        cached.cache_clear()
    parameters.clear_caches()  # type: ignore[no-untyped-call]  # Powertools leaves clear_caches unannotated
