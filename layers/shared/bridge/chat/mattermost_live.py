"""Mattermost's teller (``bridge.chat.live_posts.Teller``): a session of a ``/whereby`` room ended, so its channel
post says so.

- With the bot's post (``Room.post_id``) and a bot token: the post is read, checked to be this room's
  (``props.meeting_link`` is the room's link: a stored id never edits another room's post), and patched to
  "Meeting ended · 34 min · 3 people" with the meeting plugins' props (``meeting_status: ENDED``,
  ``meeting_end_time``), this session's id (``meeting_session``) and one summary attachment in place of the End
  button. A post that already tells this session's end is left alone, so duplicates and retries edit it once.
  Past the server's edit time limit (``PostEditTimeLimit``) only the props are patched, which the limit allows.
- Without: one follow-up through the command's ``response_url`` while it still takes posts, never on a repeat
  (a follow-up is a new message).

Either speaks the room's language (``Room.language``, its creator's), else the stack's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from bridge.chat.grammar import literal, topic_shown
from bridge.chat.live_posts import ended_line, follow_up_open
from bridge.chat.mattermost import ENDED
from bridge.chat.mattermost_bot import EDIT_TIME_LIMIT, PostRefused
from bridge.core.errors import NotFound, Rejected
from bridge.core.i18n import DEFAULT_LANGUAGE, Speech, speech
from bridge.core.observability import count, logger
from bridge.store.credentials import SecretError
from bridge.store.meetings import Room, SessionRecord


class PostEditor(Protocol):
    """The bot's calls the teller makes (``bridge.chat.mattermost_bot.MattermostBot``)."""

    def get_post(self, post_id: str) -> dict[str, Any]: ...

    def patch_post(self, post_id: str, props: Mapping[str, Any], message: str | None = None) -> None: ...


@dataclass(frozen=True)
class MattermostLivePorts:
    bot: Callable[[], PostEditor | None]  # None: no bot configured
    follow_up: Callable[[str, Mapping[str, Any]], bool]  # (response_url, CommandResponse) → taken
    clock: Callable[[], float] = time.time
    language: Callable[[], str] = lambda: DEFAULT_LANGUAGE  # the stack's, for a room that has none


def tell(room: Room, record: SessionRecord, repeat: bool, ports: MattermostLivePorts) -> str:
    """Edit the room's post, or send the one follow-up; what was done, for the log. ``PeerUnavailable`` when
    Mattermost did not answer an edit: the worker tries again, and the edit is the same."""
    sp = speech(room.language or ports.language())
    bot = _bot(ports) if room.post_id else None
    if bot is not None:
        return edit_post(room, record, bot, ports.clock, sp)
    if not follow_up_open(room, ports.clock()):
        return "no post to edit, and the command's response_url takes no more posts"
    if repeat:
        return "follow-up not sent again: an earlier attempt may have reached the channel"
    if ports.follow_up(room.response_url, follow_up_message(room, record, sp)):
        count("ChatFollowUps")
        return "follow-up posted through response_url"
    count("ChatFollowUpsRefused")
    logger.warning("mattermost did not take the follow-up", extra={"room_key": room.room_key})
    return "follow-up refused"


def _bot(ports: MattermostLivePorts) -> PostEditor | None:
    try:
        return ports.bot()
    except SecretError as exc:
        logger.error("the chat bot's token could not be read: the post is not edited", extra={"reason": str(exc)})
        return None


def edit_post(
    room: Room, record: SessionRecord, bot: PostEditor, clock: Callable[[], float], sp: Speech | None = None
) -> str:
    sp = sp or speech()
    try:
        post = bot.get_post(room.post_id)
    except (NotFound, Rejected) as exc:
        # Deleted, or the bot lost access (removed from the channel, token revoked): nothing to edit.
        return _not_edited("the bot cannot read the post", room, str(exc))
    props = post.get("props")
    props = dict(props) if isinstance(props, dict) else {}
    if props.get("meeting_link") != room.room_url:
        return _not_edited("the stored post is another room's", room)
    if props.get("meeting_status") == ENDED and props.get("meeting_session") == record.room_session_id:
        return "the post already tells this session's end"
    line = ended_line(record, sp)
    label = literal(topic_shown(room.label, sp))
    props.update(
        meeting_status=ENDED,
        meeting_end_time=(record.ended_at or int(clock())) * 1000,
        meeting_session=record.room_session_id,
        attachments=[{"fallback": f"{label}: {line}", "title": label, "text": line}],
    )
    message = ended_post(label, line, sp)
    try:
        try:
            bot.patch_post(room.post_id, props, message)
        except PostRefused as exc:
            if exc.error_id != EDIT_TIME_LIMIT:
                raise
            # Past the server's edit time limit a patch without a message is still allowed.
            bot.patch_post(room.post_id, props)
            count("ChatPostsEdited")
            return "post's props edited (past the edit time limit: its text stays)"
    except (NotFound, Rejected) as exc:
        return _not_edited("mattermost refused the edit", room, str(exc))
    count("ChatPostsEdited")
    return "post edited"


def _not_edited(why: str, room: Room, detail: str = "") -> str:
    count("ChatPostsNotEdited")
    logger.warning(f"mattermost post not edited: {why}", extra={"post_id": room.post_id, "detail": detail})
    return f"post not edited: {why}"


def ended_post(label: str, line: str, sp: Speech) -> str:
    return sp.t(":video_camera: **{topic}** · {line}", topic=label, line=line)


def follow_up_message(room: Room, record: SessionRecord, sp: Speech | None = None) -> dict[str, Any]:
    sp = sp or speech()
    return {
        "response_type": "in_channel",
        "text": ended_post(literal(topic_shown(room.label, sp)), ended_line(record, sp), sp),
        "skip_slack_parsing": True,
    }
