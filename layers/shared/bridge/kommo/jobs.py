"""Jobs on the FIFO queue: what the Kommo handlers hand to the worker.

The message group is the account + lead, so one deal's events are applied in order (a deal that enters Demo and
is lost a second later never leaks a room). The deduplication id is the event's identity, so Kommo's retries and
duplicate deliveries within SQS's five-minute window are dropped by SQS itself. A job the worker hands back to the
queue (Whereby's points were spent) is sent again as the next ``generation``, whose deduplication id differs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from bridge.core.errors import PeerUnavailable

if TYPE_CHECKING:
    from types_boto3_sqs.client import SQSClient
    from types_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

    # The intake builds jobs from parsed hooks; the worker only reads jobs and never loads the parser.
    from bridge.kommo.webhook import LeadEvent

ENSURE_ROOM = "ensure_room"
CLOSE_ROOMS = "close_rooms"
RESTORE_LEAD = "restore_lead"
MEETING_TIME = "meeting_time"  # a lead edited (``leads[update]``) in a stage whose rule follows a meeting-time field
LEAVE_STAGE = "leave_stage"  # a lead moved to a stage with no rule: rooms of rules with close_on_leave close
KINDS = (ENSURE_ROOM, CLOSE_ROOMS, RESTORE_LEAD, MEETING_TIME, LEAVE_STAGE)
SQS_BATCH = 10


class MalformedJob(ValueError):
    """A queue message that is not a job of ours; retrying it cannot help."""


@dataclass(frozen=True)
class Job:
    kind: str
    account: str  # the Kommo subdomain: the stack serves one account, named the same way in every record
    lead_id: int
    action: str  # the Kommo action that caused it: status, add, delete, restore
    status_id: int | None
    event_at: int  # when the change happened (from the body), else when we received it
    # False when the body carried no time (Digital Pipeline hooks, deletes): event_at is then our receive time,
    # which may be long after the change if Kommo delivered it again (see deal_rooms.settle_untimed).
    timed: bool = True
    generation: int = 0  # times the worker handed this job back to the queue; absent from messages before that
    # "reconcile" when Kommo's event log brought it and no webhook did; not part of the job's identity, so a webhook
    # and its reconciliation remain one job.
    source: str = field(default="webhook", compare=False)
    # The meeting time the hook carried, for rules with meeting_time_field_id: unix seconds, 0 when the deal's field
    # is empty; None when the job does not say (reconciliation, pipeline hooks, older messages): the worker asks.
    meeting_at: int | None = field(default=None, compare=False)

    @property
    def group_id(self) -> str:
        return f"{self.account}:{self.lead_id}"

    @property
    def dedup_id(self) -> str:
        identity = f"{self.kind}|{self.account}|{self.lead_id}|{self.action}|{self.status_id}|{self.event_at}"
        if self.kind == MEETING_TIME:
            identity += f"|{self.meeting_at}"  # two edits in one second differ by the value they wrote
        digest = hashlib.sha256(identity.encode()).hexdigest()
        return f"{digest}-g{self.generation}" if self.generation else digest

    def handed_back(self) -> Job:
        return replace(self, generation=self.generation + 1)

    def to_json(self) -> str:
        data = asdict(self)
        # Fields at their default stay out, so a job reads as it did before they existed.
        if not self.generation:
            del data["generation"]
        if self.timed:
            del data["timed"]
        if self.source == "webhook":
            del data["source"]
        if self.meeting_at is None:
            del data["meeting_at"]
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Job:
        try:
            data: dict[str, Any] = json.loads(text)
            job = cls(
                kind=str(data["kind"]),
                account=str(data["account"]),
                lead_id=int(data["lead_id"]),
                action=str(data["action"]),
                status_id=None if data.get("status_id") is None else int(data["status_id"]),
                event_at=int(data["event_at"]),
                timed=bool(data.get("timed", True)),
                source=str(data.get("source", "webhook")),
                generation=int(data.get("generation", 0)),
                meeting_at=None if data.get("meeting_at") is None else int(data["meeting_at"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise MalformedJob(f"not a job: {type(exc).__name__}") from None
        if job.kind not in KINDS:
            raise MalformedJob(f"unknown job kind {job.kind!r}")
        if job.generation < 0:
            raise MalformedJob(f"negative generation {job.generation}")
        return job

    @classmethod
    def for_event(
        cls, kind: str, account: str, event: LeadEvent, received_at: int, meeting_field_id: int | None = None
    ) -> Job:
        if event.occurred_at is None:
            # A Digital Pipeline hook: five ids and no fields, so it cannot say the field is empty; the worker asks.
            return cls(kind, account, event.lead_id, event.action, event.status_id, received_at, timed=False)
        meeting_at = meeting_time(event.field_value(meeting_field_id)) if meeting_field_id else None
        return cls(
            kind,
            account,
            event.lead_id,
            event.action,
            event.status_id,
            event.occurred_at,
            meeting_at=meeting_at,
        )


def meeting_time(value: str | None) -> int:
    """A date-time field's value as a hook carries it (unix seconds as text); 0 when empty or unreadable."""
    if value is None or not value.strip().isascii() or not value.strip().isdigit() or len(value.strip()) > 12:
        return 0
    return int(value.strip())


class JobQueue:
    def __init__(self, queue_url: str, client: SQSClient | None = None, dead_letter_url: str = "") -> None:
        self.queue_url = queue_url
        self.dead_letter_url = dead_letter_url
        self._client = client or boto3.client("sqs")

    def dead_letter(self, body: str, group_id: str, dedup_id: str, reason: str) -> None:
        """Move a job that can never succeed to the dead-letter queue at once, with the reason beside it.

        Retrying it would only repeat the refusal five times; there it raises the alarm and waits for a redrive.
        """
        if not self.dead_letter_url:
            raise PeerUnavailable("DEAD_LETTER_QUEUE_URL is not set")
        try:
            self._client.send_message(
                QueueUrl=self.dead_letter_url,
                MessageBody=body,
                MessageGroupId=group_id or "unknown",
                MessageDeduplicationId=dedup_id or hashlib.sha256(body.encode()).hexdigest(),
                MessageAttributes={"reason": {"DataType": "String", "StringValue": reason[:1000] or "unknown"}},
            )
        except (ClientError, BotoCoreError) as exc:
            raise PeerUnavailable(f"sqs dead-letter send failed: {type(exc).__name__}") from None

    def send_message(self, body: str, group_id: str, dedup_id: str) -> None:
        """Enqueue one message that is not a Kommo job (a Whereby event); raises ``PeerUnavailable``."""
        try:
            self._client.send_message(
                QueueUrl=self.queue_url, MessageBody=body, MessageGroupId=group_id, MessageDeduplicationId=dedup_id
            )
        except (ClientError, BotoCoreError) as exc:
            raise PeerUnavailable(f"sqs send failed: {type(exc).__name__}") from None

    def send_all(self, jobs: Sequence[Job]) -> None:
        """Enqueue every job or raise ``PeerUnavailable``; entries that failed are sent once more first."""
        for start in range(0, len(jobs), SQS_BATCH):
            batch = jobs[start : start + SQS_BATCH]
            failed = self._send_batch(batch)
            if failed:
                failed = self._send_batch([batch[i] for i in failed])
            if failed:
                raise PeerUnavailable(f"sqs refused {len(failed)} of {len(batch)} jobs")

    def _send_batch(self, batch: Sequence[Job]) -> list[int]:
        entries: list[SendMessageBatchRequestEntryTypeDef] = [
            {
                "Id": str(i),
                "MessageBody": job.to_json(),
                "MessageGroupId": job.group_id,
                "MessageDeduplicationId": job.dedup_id,
            }
            for i, job in enumerate(batch)
        ]
        try:
            answer = self._client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
        except (ClientError, BotoCoreError) as exc:
            raise PeerUnavailable(f"sqs send failed: {type(exc).__name__}") from None
        return [int(item["Id"]) for item in answer.get("Failed", [])]
