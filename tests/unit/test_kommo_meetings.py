"""A room for a meeting planned on the deal: it lives until the meeting, follows it when it moves, and the deal
owner gets a task; the deal's own edits and ours never loop."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qsl, urlencode

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core.config import ConfigError, StageRule, parse_stage_rules
from tests.conftest import DEMO_STATUS, SECRET, SUBDOMAIN, sample

LEAD = 48213577
OWNER = 1184221
FIELD = 583921  # the deal's "Meeting time" date-time field
MEETING = 1954155600  # Thu 4 Dec 2031, 14:00 in Madrid
HOUR = 3600
NO_RULE_STATUS = 61234599  # an open stage with no rule
MEETING_RULE = {
    "name": "Demo",
    "duration_minutes": 60,
    "prefix": "demo",
    "meeting_time_field_id": FIELD,
    "task": True,
    "close_on_leave": True,
}


@pytest.fixture
def meetings(stack, monkeypatch):
    """The stack with the Demo rule following the meeting-time field, with a task and close_on_leave."""
    from bridge import runtime

    monkeypatch.setenv("STAGE_RULES", json.dumps({str(DEMO_STATUS): MEETING_RULE}))
    monkeypatch.setenv("KOMMO_MEETING_FIELD_ID", "884411")
    runtime.reset()
    return stack


def lead_body(
    action: str,
    status: int,
    changed_at: int,
    meeting_at: int | None,
    modified_by: int = 5521,
    value_level: bool = False,
) -> bytes:
    """A 2025-shaped account hook for one lead; the meeting field in the v2 layout, as date fields come."""
    item = f"leads[{action}][0]"
    fields = [
        ("account[subdomain]", SUBDOMAIN),
        ("account[id]", "16503244"),
        (f"{item}[id]", str(LEAD)),
        (f"{item}[name]", "Demo call - ACME"),
        (f"{item}[status_id]", str(status)),
        (f"{item}[pipeline_id]", "7712345"),
        (f"{item}[responsible_user_id]", str(OWNER)),
        (f"{item}[modified_user_id]", str(modified_by)),
        (f"{item}[last_modified]", str(changed_at)),
        (f"{item}[updated_at]", str(changed_at)),
    ]
    if action == "status":
        fields.append((f"{item}[old_status_id]", "61234502"))
    if meeting_at is not None:
        value_key = "[values][0][value]" if value_level else "[values][0]"
        fields += [
            (f"{item}[custom_fields][0][id]", str(FIELD)),
            (f"{item}[custom_fields][0][name]", "Meeting time"),
            (f"{item}[custom_fields][0]{value_key}", str(meeting_at)),
        ]
    return urlencode(fields).encode()


def post(stack, body: bytes, path: str = "/kommo/stage") -> dict:
    headers = {"content-type": "application/x-www-form-urlencoded", "user-agent": "amoCRM-Webhooks/3.0"}
    query = urlencode({"token": SECRET["kommo_webhook_token"]})
    response = stack.request("POST", path, query=query, headers=headers, body=body)
    assert response["statusCode"] == 200, response
    return json.loads(response["body"])


def rooms(stack) -> list[dict]:
    table = boto3.resource("dynamodb", region_name="eu-west-1").Table(stack.stack.refs["MeetingsTable"])
    return [item for item in table.scan()["Items"] if item["pk"].startswith("ROOM#")]  # inspection only


def live_rooms(stack) -> list[dict]:
    return [room for room in rooms(stack) if room["state"] != "deleted"]


def enter_demo(stack, meeting_at: int | None = MEETING, at: int | None = None) -> int:
    at = at or int(time.time()) - 600
    kommo_sim_lead = post(stack, lead_body("status", DEMO_STATUS, at, meeting_at))
    assert kommo_sim_lead["accepted"] == 1
    assert stack.drain().failed == 0
    return at


def peer_calls(*sims) -> int:
    return sum(len(sim.requests_seen()) for sim in sims)


# The room's end and the note ----------------------------------------------------------------------------------------
def test_a_deal_with_a_meeting_ahead_gets_a_room_open_until_the_meeting_ends_plus_a_short_grace(
    meetings, whereby_sim, kommo_sim
):
    enter_demo(meetings)

    [meeting] = whereby_sim.meetings()
    assert meeting["endDate"] == "2031-12-04T14:15:00.000Z"  # 14:00 Madrid is 13:00 UTC; + 60 min + 15 min grace
    [record] = live_rooms(meetings)
    assert int(record["end_at"]) == MEETING + HOUR + 15 * 60 and int(record["meeting_at"]) == MEETING
    [note] = kommo_sim.notes(LEAD)
    text = note["params"]["text"]
    assert "Meeting: Thu 4 Dec, 14:00 (Europe/Madrid)" in text
    assert "Open until Thu 4 Dec, 15:15 (Europe/Madrid)." in text
    assert meeting["roomUrl"] in text and meeting["hostRoomUrl"] in text


def test_a_pipeline_hook_which_carries_no_fields_takes_the_meeting_time_from_kommo(meetings, whereby_sim, kommo_sim):
    from tests.kommo_bodies import pipeline_body

    field = [
        {"field_id": FIELD, "field_name": "Meeting time", "field_type": "date_time", "values": [{"value": MEETING}]}
    ]
    kommo_sim.add_lead(LEAD, status_id=DEMO_STATUS, responsible_user_id=OWNER, custom_fields_values=field)
    post(meetings, pipeline_body(LEAD, DEMO_STATUS))
    assert meetings.drain().failed == 0
    [record] = live_rooms(meetings)
    assert int(record["meeting_at"]) == MEETING and int(record["end_at"]) == MEETING + HOUR + 15 * 60


def test_the_note_falls_back_to_utc_when_the_account_names_a_zone_the_runtime_does_not_know(
    meetings, whereby_sim, kommo_sim
):
    kommo_sim.timezone = "Mars/Olympus_Mons"
    enter_demo(meetings)
    [note] = kommo_sim.notes(LEAD)
    assert "Meeting: Thu 4 Dec, 13:00 (UTC)" in note["params"]["text"]
    assert "Times are in UTC: the account's time zone (Mars/Olympus_Mons) is not known here." in note["params"]["text"]


def test_the_account_time_zone_is_read_once_for_many_deals(meetings, whereby_sim, kommo_sim):
    for lead in (LEAD, LEAD + 1):
        body = lead_body("status", DEMO_STATUS, int(time.time()) - 60, MEETING).replace(
            str(LEAD).encode(), str(lead).encode()
        )
        post(meetings, body)
    meetings.drain()
    assert len(whereby_sim.meetings()) == 2 and len(kommo_sim.notes()) == 2
    account_reads = [r for r in kommo_sim.requests_seen() if r["path"] == "/api/v4/account"]
    assert len(account_reads) == 1


@pytest.mark.parametrize("meeting_at", [None, 1_600_000_000], ids=["field-empty", "meeting-in-the-past"])
def test_no_meeting_time_ahead_gives_todays_room_and_the_note_says_so(meetings, whereby_sim, kommo_sim, meeting_at):
    before = time.time()
    enter_demo(meetings, meeting_at=meeting_at)

    [record] = live_rooms(meetings)
    assert before + HOUR - 5 <= int(record["end_at"]) <= time.time() + HOUR
    assert "meeting_at" not in record
    [note] = kommo_sim.notes(LEAD)
    assert "No meeting time ahead was set on the deal" in note["params"]["text"]
    assert kommo_sim.tasks(LEAD) == []  # no meeting, no task to be due at it


def test_a_rule_without_the_new_keys_writes_the_same_note_as_before(stack, whereby_sim, kommo_sim):
    post(stack, lead_body("status", DEMO_STATUS, int(time.time()) - 60, MEETING))
    stack.drain()
    [note] = kommo_sim.notes(LEAD)
    assert "Meeting:" not in note["params"]["text"] and note["params"]["text"].endswith(" UTC.")
    assert kommo_sim.tasks() == []
    # The account is read once, for the language the note is written in; its time zone is not used here.
    assert len([r for r in kommo_sim.requests_seen() if r["path"] == "/api/v4/account"]) == 1


# The task -----------------------------------------------------------------------------------------------------------
def test_the_deal_owner_gets_one_meeting_task_due_at_the_meeting_with_the_client_link(meetings, whereby_sim, kommo_sim):
    kommo_sim.add_lead(LEAD, status_id=DEMO_STATUS, responsible_user_id=OWNER)
    at = enter_demo(meetings)
    # The same hook again, and the job redelivered after SQS's deduplication window: still one task.
    post(meetings, lead_body("status", DEMO_STATUS, at, MEETING))
    meetings.drain()
    from bridge.kommo.jobs import ENSURE_ROOM, Job

    job = Job(ENSURE_ROOM, SUBDOMAIN, LEAD, "status", DEMO_STATUS, at, meeting_at=MEETING)
    boto3.client("sqs", region_name="eu-west-1").send_message(
        QueueUrl=meetings.stack.refs["JobsQueue"],
        MessageBody=job.to_json(),
        MessageGroupId=job.group_id,
        MessageDeduplicationId="an-hour-later",
    )
    meetings.drain()

    [task] = kommo_sim.tasks(LEAD)
    [meeting] = whereby_sim.meetings()
    assert task["task_type_id"] == 2 and task["entity_type"] == "leads"
    assert task["responsible_user_id"] == OWNER
    assert (task["complete_till"], task["duration"]) == (MEETING, HOUR)
    assert meeting["roomUrl"] in task["text"] and meeting["hostRoomUrl"] not in task["text"]


def test_a_task_whose_answer_was_lost_is_not_made_twice(meetings, whereby_sim, kommo_sim):
    kommo_sim.add_lead(LEAD, status_id=DEMO_STATUS, responsible_user_id=OWNER)
    # The note's POST goes through; the task's is carried out and its answer lost, then the job is retried.
    kommo_sim.fail_next(1, status=0, method="POST", after=1, lost_answer=True)
    enter_demo(meetings)
    assert len(kommo_sim.tasks(LEAD)) == 1
    assert len(kommo_sim.notes(LEAD)) == 1


# Rescheduling -------------------------------------------------------------------------------------------------------
def test_a_meeting_moved_later_gets_a_new_room_the_old_one_deleted_one_note_and_the_task_moved(
    meetings, whereby_sim, kommo_sim
):
    kommo_sim.add_lead(LEAD, status_id=DEMO_STATUS, responsible_user_id=OWNER)
    at = enter_demo(meetings)
    [old] = whereby_sim.meetings()
    later = MEETING + 2 * 24 * HOUR  # Sat 6 Dec

    assert post(meetings, lead_body("update", DEMO_STATUS, at + 60, later))["accepted"] == 1
    assert meetings.drain().failed == 0

    [new] = whereby_sim.meetings()
    assert new["meetingId"] != old["meetingId"]
    assert new["endDate"] == "2031-12-06T14:15:00.000Z"
    [record] = live_rooms(meetings)
    assert record["meeting_id"] == new["meetingId"] and not record.get("replaces")
    notes = [n["params"]["text"] for n in kommo_sim.notes(LEAD)]
    assert len(notes) == 2
    assert "meeting moved" in notes[1] and "Meeting: Sat 6 Dec, 14:00 (Europe/Madrid)" in notes[1]
    assert new["roomUrl"] in notes[1]
    [task] = kommo_sim.tasks(LEAD)
    assert task["complete_till"] == later and new["roomUrl"] in task["text"]
    field = kommo_sim.lead(LEAD)["custom_fields_values"]
    assert [f["values"] for f in field if f["field_id"] == 884411] == [[{"value": new["meetingId"]}]]


def test_a_follow_up_refused_for_good_is_given_up_and_the_error_log_says_which(
    meetings, whereby_sim, kommo_sim, log_lines
):
    kommo_sim.add_lead(LEAD, status_id=DEMO_STATUS, responsible_user_id=OWNER)
    kommo_sim.fail_next(1, status=400, method="POST", after=1)  # the room note passes; the task is refused
    at = enter_demo(meetings)
    assert kommo_sim.tasks(LEAD) == [] and len(kommo_sim.notes(LEAD)) == 1
    logged = "\n".join(log_lines())
    assert "the meeting task was refused for good and is given up" in logged

    # The meeting moves: Whereby refuses to delete the replaced room (403), and the move still completes.
    whereby_sim.fail_next(1, status=403, method="DELETE")
    assert post(meetings, lead_body("update", DEMO_STATUS, at + 60, MEETING + 2 * 24 * HOUR))["accepted"] == 1
    assert meetings.drain().failed == 0
    assert len(whereby_sim.meetings()) == 2  # the old one is left to the sweeper, once its time has passed
    assert "deleting replaced room" in "\n".join(log_lines())


def test_a_move_later_interrupted_by_a_whereby_outage_finishes_on_retry_with_one_room_and_one_note(
    meetings, whereby_sim, kommo_sim
):
    at = enter_demo(meetings)
    whereby_sim.fail_next(3, status=503)  # every attempt of the worker's first try at the new room
    post(meetings, lead_body("update", DEMO_STATUS, at + 60, MEETING + 2 * 24 * HOUR))
    assert meetings.drain(max_rounds=1).failed == 1
    assert len(whereby_sim.meetings()) == 1  # the client's link still works while the move waits

    assert meetings.drain().failed == 0

    [new] = whereby_sim.meetings()
    [record] = live_rooms(meetings)
    assert record["meeting_id"] == new["meetingId"]
    moved = [n for n in kommo_sim.notes(LEAD) if "meeting moved" in n["params"]["text"]]
    assert len(moved) == 1 and new["roomUrl"] in moved[0]["params"]["text"]


def test_a_meeting_moved_earlier_keeps_the_room_and_moves_the_task(meetings, whereby_sim, kommo_sim):
    kommo_sim.add_lead(LEAD, status_id=DEMO_STATUS, responsible_user_id=OWNER)
    at = enter_demo(meetings)
    [room] = whereby_sim.meetings()
    earlier = MEETING - 24 * HOUR

    post(meetings, lead_body("update", DEMO_STATUS, at + 60, earlier))
    assert meetings.drain().failed == 0

    assert whereby_sim.meetings() == [room]
    assert len(kommo_sim.notes(LEAD)) == 1
    [task] = kommo_sim.tasks(LEAD)
    assert task["complete_till"] == earlier
    [record] = live_rooms(meetings)
    assert int(record["meeting_at"]) == earlier


def test_a_cleared_meeting_field_changes_nothing(meetings, whereby_sim, kommo_sim):
    kommo_sim.add_lead(LEAD, status_id=DEMO_STATUS, responsible_user_id=OWNER)
    at = enter_demo(meetings)
    before = (whereby_sim.meetings(), kommo_sim.notes(LEAD), kommo_sim.tasks(LEAD), live_rooms(meetings))

    post(meetings, lead_body("update", DEMO_STATUS, at + 60, None))
    assert meetings.drain().failed == 0

    assert (whereby_sim.meetings(), kommo_sim.notes(LEAD), kommo_sim.tasks(LEAD), live_rooms(meetings)) == before


def test_an_update_hook_caused_by_our_own_write_calls_no_peer(meetings, whereby_sim, kommo_sim):
    at = enter_demo(meetings)
    calls = peer_calls(whereby_sim, kommo_sim)

    # Writing the meeting-id field fired this: same meeting time, modified by the API (user 0).
    assert post(meetings, lead_body("update", DEMO_STATUS, at + 1, MEETING, modified_by=0))["accepted"] == 1
    assert meetings.drain().processed == 1

    assert peer_calls(whereby_sim, kommo_sim) == calls


def test_a_booking_tool_writing_the_meeting_time_through_the_api_is_followed(meetings, whereby_sim, kommo_sim):
    at = enter_demo(meetings, meeting_at=None)
    post(meetings, lead_body("update", DEMO_STATUS, at + 60, MEETING, modified_by=0))
    meetings.drain()
    [record] = live_rooms(meetings)
    assert int(record["meeting_at"]) == MEETING and int(record["end_at"]) == MEETING + HOUR + 15 * 60
    assert len(whereby_sim.meetings()) == 1


def test_a_deal_already_in_the_stage_without_a_room_gets_one_when_its_meeting_time_is_set(
    meetings, whereby_sim, kommo_sim
):
    # In Demo before the rule followed a meeting time: the bridge has no record of the deal at all.
    kommo_sim.add_lead(LEAD, status_id=DEMO_STATUS, responsible_user_id=OWNER)
    assert post(meetings, lead_body("update", DEMO_STATUS, int(time.time()) - 60, MEETING))["accepted"] == 1
    assert meetings.drain().failed == 0

    [meeting] = whereby_sim.meetings()
    [record] = live_rooms(meetings)
    assert int(record["meeting_at"]) == MEETING and record["meeting_id"] == meeting["meetingId"]
    [note] = kommo_sim.notes(LEAD)
    assert "Meeting: Thu 4 Dec, 14:00 (Europe/Madrid)" in note["params"]["text"]
    [task] = kommo_sim.tasks(LEAD)
    assert task["complete_till"] == MEETING


def test_an_update_hook_of_a_stage_that_follows_no_meeting_time_is_not_enqueued(stack, whereby_sim, kommo_sim):
    assert post(stack, lead_body("update", DEMO_STATUS, int(time.time()), MEETING)) == {"accepted": 0, "ignored": 1}


# close_on_leave -----------------------------------------------------------------------------------------------------
def test_a_deal_that_moves_on_to_a_stage_with_no_rule_has_its_room_closed_once(meetings, whereby_sim, kommo_sim):
    at = enter_demo(meetings)
    [meeting] = whereby_sim.meetings()

    for _ in range(2):  # delivered twice
        assert post(meetings, lead_body("status", NO_RULE_STATUS, at + 60, MEETING))["accepted"] == 1
        assert meetings.drain().failed == 0

    assert whereby_sim.meetings() == [] and live_rooms(meetings) == []
    closing = [n for n in kommo_sim.notes(LEAD) if "closed" in n["params"]["text"]]
    assert [n["params"]["text"].splitlines()[0] for n in closing] == ["Video room closed: the deal left Demo."]
    assert meeting["roomName"].lstrip("/") in closing[0]["params"]["text"]
    # Kommo's notes are looked through only when a post may have landed unseen: not on a first, answered post.
    assert [r for r in kommo_sim.requests_seen() if r["method"] == "GET" and r["path"].endswith("/notes")] == []
    # Back in Demo later: a new room.
    post(meetings, lead_body("status", DEMO_STATUS, at + 120, MEETING))
    meetings.drain()
    assert len(whereby_sim.meetings()) == 1


def test_leaving_for_a_stage_with_no_rule_closes_every_live_room_even_after_one_already_gone(
    meetings, whereby_sim, kommo_sim, monkeypatch
):
    from bridge import runtime

    follow_up = 61234600
    rule = {"name": "Follow-up", "duration_minutes": 30, "prefix": "follow", "close_on_leave": True}
    monkeypatch.setenv("STAGE_RULES", json.dumps({str(DEMO_STATUS): MEETING_RULE, str(follow_up): rule}))
    runtime.reset()
    at = enter_demo(meetings)
    [demo] = live_rooms(meetings)
    assert post(meetings, lead_body("status", follow_up, at + 30, MEETING))["accepted"] == 1
    assert meetings.drain().failed == 0
    runtime.store().mark_deleted(demo["room_key"])  # the Demo room is gone already (the sweeper, after its time)
    [follow] = live_rooms(meetings)

    assert post(meetings, lead_body("status", NO_RULE_STATUS, at + 60, MEETING))["accepted"] == 1
    assert meetings.drain().failed == 0
    assert live_rooms(meetings) == []
    assert follow["meeting_id"] not in {m["meetingId"] for m in whereby_sim.meetings()}
    closing = [n["params"]["text"] for n in kommo_sim.notes(LEAD) if "closed" in n["params"]["text"]]
    assert [text.splitlines()[0] for text in closing] == ["Video room closed: the deal left Follow-up."]


def test_a_leave_note_kommo_could_not_take_is_posted_on_the_retry_after_the_room_is_gone(
    meetings, whereby_sim, kommo_sim
):
    at = enter_demo(meetings)
    kommo_sim.fail_next(3, status=503, method="POST")  # the room is deleted, then Kommo is down for the note
    assert post(meetings, lead_body("status", NO_RULE_STATUS, at + 60, MEETING))["accepted"] == 1
    assert meetings.drain(max_rounds=1).failed == 1
    assert whereby_sim.meetings() == []
    assert meetings.drain().failed == 0
    closing = [n["params"]["text"] for n in kommo_sim.notes(LEAD) if "closed" in n["params"]["text"]]
    assert [text.splitlines()[0] for text in closing] == ["Video room closed: the deal left Demo."]


def test_a_stage_change_that_names_no_stage_closes_nothing(meetings, whereby_sim, kommo_sim):
    at = enter_demo(meetings)
    moved = parse_qsl(lead_body("status", NO_RULE_STATUS, at + 60, MEETING).decode())
    nameless = urlencode([(key, value) for key, value in moved if not key.endswith("[status_id]")]).encode()
    assert post(meetings, nameless) == {"accepted": 0, "ignored": 1}
    assert meetings.drain().failed == 0
    assert len(whereby_sim.meetings()) == 1 and len(live_rooms(meetings)) == 1
    assert not [n for n in kommo_sim.notes(LEAD) if "closed" in n["params"]["text"]]


def test_a_missed_move_to_a_stage_with_no_rule_is_caught_by_the_reconciliation(meetings, whereby_sim, kommo_sim):
    from bridge import runtime
    from bridge.kommo.reconcile import reconcile

    at = enter_demo(meetings)
    kommo_sim.move_lead(LEAD, NO_RULE_STATUS, at=at + 60)  # moved in Kommo; its webhook never came
    ports = (runtime.kommo_reconcile(), runtime.job_queue(), runtime.store(), runtime.settings())
    for _ in range(2):  # a second run changes nothing
        reconcile(*ports, clock=lambda: at + 600)
        assert meetings.drain().failed == 0

    assert whereby_sim.meetings() == [] and live_rooms(meetings) == []
    closing = [n for n in kommo_sim.notes(LEAD) if "closed" in n["params"]["text"]]
    assert [n["params"]["text"].splitlines()[0] for n in closing] == ["Video room closed: the deal left Demo."]


def test_without_close_on_leave_the_room_outlives_a_move_to_a_stage_with_no_rule(
    meetings, whereby_sim, kommo_sim, monkeypatch
):
    from bridge import runtime

    monkeypatch.setenv("STAGE_RULES", json.dumps({str(DEMO_STATUS): {**MEETING_RULE, "close_on_leave": False}}))
    runtime.reset()
    at = enter_demo(meetings)
    assert post(meetings, lead_body("status", NO_RULE_STATUS, at + 60, MEETING))["accepted"] == 0
    assert len(whereby_sim.meetings()) == 1


# Wire formats and rules ---------------------------------------------------------------------------------------------
def test_the_2025_update_sample_reads_the_api_as_its_author_and_its_custom_field():
    from bridge.kommo.webhook import parse_webhook

    [event] = parse_webhook(sample("06_update_by_api_with_custom_field_2025.form")).events
    assert (event.action, event.modified_user_id, event.responsible_user_id) == ("update", 0, 2852878)
    assert event.field_value(957901) == "30052055" and event.field_value(1) is None


def test_a_field_of_a_shape_the_bridge_does_not_know_hides_no_field_after_it():
    from bridge.kommo.webhook import parse_webhook

    body = lead_body("update", DEMO_STATUS, 1_767_225_000, MEETING).replace(
        b"custom_fields%5D%5B0%5D", b"custom_fields%5D%5B1%5D"
    )
    # Another integration's field first, with no values list: skipped, and the meeting time after it still read.
    odd = urlencode(
        [("leads[update][0][custom_fields][0][id]", "777"), ("leads[update][0][custom_fields][0][values]", "x")]
    )
    [event] = parse_webhook(body + b"&" + odd.encode()).events
    assert event.field_value(FIELD) == str(MEETING) and event.field_value(777) is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"meeting_time_field_id": "583921"}, "meeting_time_field_id must be the numeric id"),
        ({"meeting_time_field_id": 0}, "meeting_time_field_id must be the numeric id"),
        ({"task": True}, "task needs meeting_time_field_id"),
        ({"meeting_time_field_id": 5, "task": "yes"}, "task must be true or false"),
        ({"close_on_leave": 1}, "close_on_leave must be true or false"),
    ],
)
def test_a_malformed_meeting_rule_key_is_named_in_the_error(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_stage_rules(json.dumps({"7": spec}))


@settings(deadline=None)  # the first example imports the worker's module
@given(
    meeting_at=st.integers(min_value=0, max_value=4_000_000_000),
    now=st.integers(min_value=1_700_000_000, max_value=3_000_000_000),
    minutes=st.integers(min_value=5, max_value=60 * 24 * 30),
)
def test_a_rooms_end_always_covers_the_meeting_ahead_and_never_lies_in_the_past(meeting_at, now, minutes):
    from bridge.kommo.deal_rooms import room_end

    rule = StageRule(DEMO_STATUS, "Demo", minutes, meeting_time_field_id=FIELD)
    end = room_end(rule, meeting_at, now)
    assert end >= now + minutes * 60  # never shorter than today's rule
    if meeting_at > now:
        assert meeting_at + minutes * 60 <= end <= meeting_at + minutes * 60 + 15 * 60
    else:
        assert end == now + minutes * 60


@settings(deadline=None)
@given(value=st.integers(min_value=1, max_value=4_000_000_000), nested=st.booleans())
def test_a_meeting_field_reads_the_same_in_both_layouts_kommo_sends(value, nested):
    from bridge.kommo.jobs import meeting_time
    from bridge.kommo.webhook import parse_webhook

    event = parse_webhook(lead_body("update", DEMO_STATUS, 1_767_225_000, value, value_level=nested)).events[0]
    assert meeting_time(event.field_value(FIELD)) == value
