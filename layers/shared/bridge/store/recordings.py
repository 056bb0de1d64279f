"""Recordings and transcriptions of our rooms, and the stable links our notes give to them.

A note is forever and Whereby's access links die within 12 hours, so a note carries ``<api>/recordings/<link id>``
and each click asks Whereby for a fresh link. The link id is a bearer credential (``secrets.token_urlsafe(24)``,
192 random bits): the table keeps only its SHA-256, so a backup, an export or a console read of the table opens no
recording. A plain hash is enough: nobody can search 2**192 ids for one that matches.

Keys (in the meetings table, ``bridge.store.meetings``):
- ``RECORDING#<sha256 of the link id>`` / ``RECORDING``: what the link opens (the Whereby recording or transcription,
  its room, the room's owner) and when it is to be deleted. Read by GetItem alone, never by a scan.
- ``MEDIA#<kind>#<Whereby id>`` / ``MEDIA``: one per Whereby recording, so an event delivered twice finds the link
  made the first time. It holds the link id in clear only until the deal's note carrying it is posted.
- The lead (``LEAD#…``) lists its recordings' hashes in ``recordings``, so a close finds them without an index.

Retention: a recording due for deletion carries ``expiry_bucket = "recording"`` and ``end_at`` = the time it is due,
so it appears in the ``by_expiry`` index under its own bucket and the sweep reads the due ones and nothing else.
An owner's recordings never carry ``owner``: they stay out of ``by_owner``, whose readers expect rooms.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.conditions import Key
from botocore.exceptions import ClientError

from bridge.store.meetings import DELETED, DELETED_RETENTION_SECONDS, Conflict, MeetingsStore

if TYPE_CHECKING:
    from types_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

RECORDING = "recording"
TRANSCRIPTION = "transcription"
KEPT = "kept"
DUE_BUCKET = "recording"  # the by_expiry bucket of recordings due for deletion (rooms use "live")


def link_hash(link_id: str) -> str:
    return hashlib.sha256(link_id.encode()).hexdigest()


def _media_key(kind: str, media_id: str) -> dict[str, str]:
    return {"pk": f"MEDIA#{kind}#{media_id}", "sk": "MEDIA"}


def _recording_key(digest: str) -> dict[str, str]:
    return {"pk": f"RECORDING#{digest}", "sk": "RECORDING"}


@dataclass(frozen=True)
class Recording:
    """What a stable link opens."""

    digest: str  # SHA-256 of the link id
    kind: str  # recording | transcription
    media_id: str  # Whereby's recordingId or transcriptionId
    room_key: str
    room_owner: str  # LEAD#… or CHANNEL#…, as the room's owner
    created_at: int
    state: str = KEPT
    delete_at: int | None = None  # set when its deal closed: deleted by the sweep from then on

    def gone(self, now: float) -> bool:
        """Deleted, or due for deletion: a link to it no longer opens anything."""
        return self.state == DELETED or (self.delete_at is not None and self.delete_at <= now)

    def item(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            **_recording_key(self.digest),
            "kind": self.kind,
            "media_id": self.media_id,
            "room_key": self.room_key,
            "room_owner": self.room_owner,
            "created_at": self.created_at,
            "state": self.state,
        }
        if self.delete_at is not None:
            item.update(delete_at=self.delete_at, expiry_bucket=DUE_BUCKET, end_at=self.delete_at)
        return item

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Recording:
        delete_at = item.get("delete_at")
        return cls(
            digest=str(item["pk"]).removeprefix("RECORDING#"),
            kind=str(item["kind"]),
            media_id=str(item["media_id"]),
            room_key=str(item["room_key"]),
            room_owner=str(item["room_owner"]),
            created_at=int(item["created_at"]),
            state=str(item.get("state", KEPT)),
            delete_at=None if delete_at is None else int(delete_at),
        )


@dataclass(frozen=True)
class MediaLink:
    """The link made for one Whereby recording; ``link_id`` is None once the deal's note carries it."""

    digest: str
    link_id: str | None
    note_attempted: bool = False
    note_posted: bool = False


class RecordingsStore:
    """The recording records, in the meetings table."""

    def __init__(self, meetings: MeetingsStore) -> None:
        self.table = meetings.table
        self.table_name = meetings.table_name
        self._call = meetings._call
        self._transact = meetings._transact

    # reads -----------------------------------------------------------------------------------------------------
    def by_link(self, link_id: str) -> Recording | None:
        """The recording a link id opens (one GetItem on its hash)."""
        answer = self._call(self.table.get_item, Key=_recording_key(link_hash(link_id)), ConsistentRead=True)
        return Recording.from_item(answer["Item"]) if "Item" in answer else None

    def get(self, digest: str) -> Recording | None:
        answer = self._call(self.table.get_item, Key=_recording_key(digest), ConsistentRead=True)
        return Recording.from_item(answer["Item"]) if "Item" in answer else None

    def media_link(self, kind: str, media_id: str) -> MediaLink | None:
        answer = self._call(self.table.get_item, Key=_media_key(kind, media_id), ConsistentRead=True)
        item = answer.get("Item")
        if item is None:
            return None
        return MediaLink(
            digest=str(item["link_hash"]),
            link_id=item.get("link_id"),
            note_attempted=bool(item.get("note_attempted", False)),
            note_posted=bool(item.get("note_posted", False)),
        )

    def of_lead(self, owner: str) -> list[str]:
        """The hashes of a lead's recordings."""
        answer = self._call(self.table.get_item, Key={"pk": owner, "sk": "LEAD"}, ConsistentRead=True)
        return sorted((answer.get("Item") or {}).get("recordings") or ())

    def due(self, now: int, limit: int) -> Iterator[Recording]:
        """Recordings not yet deleted whose deletion is due, oldest first; reads only those records."""
        kwargs: dict[str, Any] = {
            "IndexName": "by_expiry",
            "KeyConditionExpression": Key("expiry_bucket").eq(DUE_BUCKET) & Key("end_at").lte(now),
            "Limit": limit,
        }
        while True:
            answer = self._call(self.table.query, **kwargs)
            yield from (Recording.from_item(item) for item in answer.get("Items", []))
            if "LastEvaluatedKey" not in answer:
                return
            kwargs["ExclusiveStartKey"] = answer["LastEvaluatedKey"]

    # writes ----------------------------------------------------------------------------------------------------
    def add(self, recording: Recording, link_id: str, lead: str | None) -> None:
        """Record a recording, its link and (for a deal's room) its place on the lead, in one transaction.

        Raises ``Conflict`` when this Whereby recording already has its link: the caller reads that one instead.
        """
        media: dict[str, Any] = {
            **_media_key(recording.kind, recording.media_id),
            "link_hash": recording.digest,
            "link_id": link_id,
        }
        items: list[TransactWriteItemTypeDef] = [
            {"Put": {"TableName": self.table_name, "Item": media, "ConditionExpression": "attribute_not_exists(pk)"}},
            {
                "Put": {
                    "TableName": self.table_name,
                    "Item": recording.item(),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
        ]
        if lead is not None:
            items.append(
                {
                    "Update": {
                        "TableName": self.table_name,
                        "Key": {"pk": lead, "sk": "LEAD"},
                        "UpdateExpression": "ADD recordings :digest",
                        "ExpressionAttributeValues": {":digest": {recording.digest}},
                    }
                }
            )
        try:
            self._transact(items)
        except Conflict:
            raise Conflict("this recording already has its link") from None

    def mark_note(self, kind: str, media_id: str, *, attempted: bool = False, posted: bool = False) -> None:
        """Record a step of the note; once it is posted the link id in clear is dropped: the note holds it now."""
        if posted:
            update, values = "SET note_posted = :true REMOVE link_id", {":true": True}
        elif attempted:
            update, values = "SET note_attempted = :true", {":true": True}
        else:
            return
        self._call(
            self.table.update_item,
            Key=_media_key(kind, media_id),
            UpdateExpression=update,
            ExpressionAttributeValues=values,
        )

    def schedule_deletion(self, digest: str, at: int) -> None:
        """Have the sweep delete the recording from ``at`` on; an earlier time already set stays."""
        try:
            self._call(
                self.table.update_item,
                Key=_recording_key(digest),
                UpdateExpression="SET delete_at = :at, end_at = :at, expiry_bucket = :bucket",
                ConditionExpression="attribute_exists(pk) AND #state <> :deleted"
                " AND (attribute_not_exists(delete_at) OR delete_at > :at)",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={":at": at, ":bucket": DUE_BUCKET, ":deleted": DELETED},
            )
        except ClientError:
            return  # deleted already, or due sooner

    def mark_deleted(self, recording: Recording, now: float | None = None) -> None:
        """Whereby deleted it: the record leaves the index and is purged by TTL, with its media record."""
        at = int(now if now is not None else time.time())
        purge = at + DELETED_RETENTION_SECONDS
        try:
            self._call(
                self.table.update_item,
                Key=_recording_key(recording.digest),
                UpdateExpression="SET #state = :deleted, updated_at = :at, purge_at = :purge"
                " REMOVE expiry_bucket, end_at",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={":deleted": DELETED, ":at": at, ":purge": purge},
            )
            self._call(
                self.table.update_item,
                Key=_media_key(recording.kind, recording.media_id),
                UpdateExpression="SET purge_at = :purge REMOVE link_id",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":purge": purge},
            )
        except ClientError:
            return  # purged already
