"""Deals won, lost or deleted close their rooms; the sweep deletes expired rooms and rooms nobody owns."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from urllib.parse import urlencode

import boto3
import pytest

from tests.conftest import DEMO_STATUS, SECRET, SUBDOMAIN
from tests.kommo_bodies import delete_body, status_body

LEAD = 22890011


def post(stack, path: str, body: bytes) -> tuple[int, dict]:
    response = stack.request(
        "POST",
        path,
        query=urlencode({"token": SECRET["kommo_webhook_token"]}),
        headers={"content-type": "application/x-www-form-urlencoded"},
        body=body,
    )
    return response["statusCode"], json.loads(response["body"])


def records(stack) -> list[dict]:
    table = boto3.resource("dynamodb", region_name="eu-west-1").Table(stack.stack.refs["MeetingsTable"])
    return [item for item in table.scan()["Items"] if item["pk"].startswith("ROOM#")]  # inspection only


def open_room(stack, lead: int = LEAD, at: int = 1_767_225_000) -> None:
    assert post(stack, "/kommo/stage", status_body(lead, DEMO_STATUS, at))[0] == 200
    stack.drain()


@pytest.mark.parametrize(("status", "word"), [(142, "won"), (143, "lost")])
def test_won_or_lost_deal_deletes_its_room_and_says_so(stack, whereby_sim, kommo_sim, status, word):
    open_room(stack)
    assert len(whereby_sim.meetings()) == 1
    assert post(stack, "/kommo/close", status_body(LEAD, status, 1_767_225_600)) == (200, {"accepted": 1, "ignored": 0})
    stack.drain()
    assert whereby_sim.meetings() == []
    assert [r["state"] for r in records(stack)] == ["deleted"]
    room_name = whereby_sim.requests_seen()[0]["json"]["roomNamePrefix"]
    text = kommo_sim.notes(LEAD)[-1]["params"]["text"]
    assert text.startswith(f"Video room closed: deal {word}.\n{room_name}")  # which link died


def test_a_deal_moved_into_another_closing_stage_of_closedstatusids_deletes_its_room_and_says_so(
    stack, whereby_sim, kommo_sim, monkeypatch
):
    from tests.unit.test_hardening import use_setting

    use_setting(stack, monkeypatch, CLOSED_STATUS_IDS="142,143,61234599")  # a team's own "Cancelled" stage
    open_room(stack)
    assert post(stack, "/kommo/close", status_body(LEAD, 61234599, 1_767_225_600)) == (
        200,
        {"accepted": 1, "ignored": 0},
    )
    assert stack.drain().failed == 0
    assert whereby_sim.meetings() == []
    room_name = whereby_sim.requests_seen()[0]["json"]["roomNamePrefix"]
    text = kommo_sim.notes(LEAD)[-1]["params"]["text"]
    assert text.startswith(f"Video room closed: deal closed.\n{room_name}")


def test_deleted_deal_deletes_its_room_without_a_note(stack, whereby_sim, kommo_sim):
    open_room(stack)
    assert post(stack, "/kommo/close", delete_body(LEAD))[0] == 200
    stack.drain()
    assert whereby_sim.meetings() == []
    assert len(kommo_sim.notes(LEAD)) == 1  # only the room note from before


def test_a_deal_that_enters_demo_and_is_lost_a_second_later_leaks_nothing(stack, whereby_sim):
    post(stack, "/kommo/stage", status_body(LEAD, DEMO_STATUS, 1_767_225_000))
    post(stack, "/kommo/close", status_body(LEAD, 143, 1_767_225_001))
    drained = stack.drain()
    assert whereby_sim.meetings() == []
    assert (drained.failed, stack.queue_depth("JobsDeadLetterQueue")) == (0, 0)
    # Kommo retries the stage event an hour later: the deal has moved on, no room comes back.
    from bridge.kommo.jobs import ENSURE_ROOM, Job

    job = Job(ENSURE_ROOM, SUBDOMAIN, LEAD, "status", DEMO_STATUS, 1_767_225_000)
    boto3.client("sqs", region_name="eu-west-1").send_message(
        QueueUrl=stack.stack.refs["JobsQueue"],
        MessageBody=job.to_json(),
        MessageGroupId=job.group_id,
        MessageDeduplicationId="retry-an-hour-later",
    )
    drained = stack.drain()
    assert whereby_sim.meetings() == []
    # It ends quietly: done, not failed five times into the dead-letter queue.
    assert drained.processed == 1
    assert (drained.failed, stack.queue_depth("JobsDeadLetterQueue")) == (0, 0)


def test_a_reopened_deal_gets_a_new_room_and_an_old_lost_event_does_not_close_it(stack, whereby_sim):
    open_room(stack, at=100)
    post(stack, "/kommo/close", status_body(LEAD, 143, 200))
    stack.drain()
    open_room(stack, at=300)
    assert len(whereby_sim.meetings()) == 1
    from bridge.kommo.jobs import CLOSE_ROOMS, Job

    stale = Job(CLOSE_ROOMS, SUBDOMAIN, LEAD, "status", 143, 200)
    boto3.client("sqs", region_name="eu-west-1").send_message(
        QueueUrl=stack.stack.refs["JobsQueue"],
        MessageBody=stale.to_json(),
        MessageGroupId=stale.group_id,
        MessageDeduplicationId="stale-close",
    )
    drained = stack.drain()
    assert len(whereby_sim.meetings()) == 1
    assert drained.processed == 1
    assert (drained.failed, stack.queue_depth("JobsDeadLetterQueue")) == (0, 0)


def test_closing_a_deal_without_rooms_is_a_quiet_no_op(stack, whereby_sim, kommo_sim):
    assert post(stack, "/kommo/close", status_body(4242, 142, 1_767_225_600)) == (200, {"accepted": 1, "ignored": 0})
    result = stack.drain()
    assert (result.processed, result.failed) == (1, 0)
    assert stack.queue_depth("JobsDeadLetterQueue") == 0
    assert kommo_sim.notes() == []
    assert not [r for r in whereby_sim.requests_seen() if r["method"] == "DELETE"]


def test_a_room_already_gone_at_whereby_counts_as_deleted(stack, whereby_sim):
    open_room(stack)
    whereby_sim.fail_next(1, status=404, method="DELETE")
    post(stack, "/kommo/close", status_body(LEAD, 142, 1_767_225_600))
    assert stack.drain().failed == 0
    assert [r["state"] for r in records(stack)] == ["deleted"]


def test_the_close_route_ignores_stage_changes_and_the_stage_route_ignores_closes(stack):
    assert post(stack, "/kommo/close", status_body(LEAD, DEMO_STATUS, 1)) == (200, {"accepted": 0, "ignored": 1})
    assert post(stack, "/kommo/stage", status_body(LEAD, 143, 1)) == (200, {"accepted": 0, "ignored": 1})
    assert post(stack, "/kommo/stage", delete_body(LEAD)) == (200, {"accepted": 0, "ignored": 1})


# The sweep ---------------------------------------------------------------------------------------------------------


def ports():
    from bridge import runtime

    return runtime.store(), runtime.whereby(), runtime.settings()


def later(seconds: float):
    return lambda: time.time() + seconds


def test_sweeper_deletes_rooms_whose_time_is_up(stack, whereby_sim):
    open_room(stack)
    summary = stack.invoke("SweeperFunction", {"source": "schedule"})
    assert summary["deleted"] == 0 and len(whereby_sim.meetings()) == 1
    from bridge.whereby.sweeper import sweep

    summary = sweep(*ports(), clock=later(2 * 3600)).as_dict()
    assert summary["deleted"] == 1
    assert whereby_sim.meetings() == []
    assert [r["state"] for r in records(stack)] == ["deleted"]


def an_orphan_behind_a_full_page(monkeypatch, max_pages: int):
    """Whereby's list: a full first page of another stack's rooms, then a room of ours with no record (a lost answer)
    on the second page; the sweep reads ``max_pages`` pages a run."""
    from bridge import runtime
    from bridge.whereby.client import RoomRequest, room_prefix

    monkeypatch.setenv("SWEEP_MAX_PAGES", str(max_pages))
    runtime.reset()
    store, whereby = runtime.store(), runtime.whereby()
    later = datetime.fromtimestamp(time.time() + 3600, UTC)
    for _ in range(100):
        whereby.create_meeting(RoomRequest(later, prefix="another-stacks-room-"))
    orphan = whereby.create_meeting(RoomRequest(later, prefix=room_prefix("x", store.new_room_key())))
    return store, whereby, runtime.settings(), orphan


def test_the_sweep_goes_on_where_the_last_run_stopped_in_wherebys_room_list(stack, whereby_sim, monkeypatch):
    from bridge.whereby.sweeper import sweep

    store, whereby, settings, orphan = an_orphan_behind_a_full_page(monkeypatch, max_pages=1)
    first = sweep(store, whereby, settings)
    assert (first.pages_read, first.orphans) == (1, 0)
    second = sweep(store, whereby, settings)
    assert (second.pages_read, second.orphans) == (1, 1)
    assert orphan.meeting_id not in {m["meetingId"] for m in whereby_sim.meetings()}


def test_one_sweep_walks_every_page_of_wherebys_room_list_once_then_starts_over(stack, whereby_sim, monkeypatch):
    from bridge.whereby.sweeper import sweep

    store, whereby, settings, orphan = an_orphan_behind_a_full_page(monkeypatch, max_pages=5)
    first = sweep(store, whereby, settings)
    assert (first.pages_read, first.orphans, first.walk_done) == (2, 1, True)
    assert orphan.meeting_id not in {m["meetingId"] for m in whereby_sim.meetings()}
    second = sweep(store, whereby, settings)
    # The walk was done: the next run starts again at the first page, which now holds every room.
    assert (second.walk_from_start, second.pages_read, second.orphans) == (True, 1, 0)


def test_sweeper_reads_only_the_expired_records(stack, whereby_sim):
    from bridge.store.meetings import Room, lead_owner
    from bridge.whereby.sweeper import sweep

    store, whereby, settings = ports()
    now = int(time.time())
    table = boto3.resource("dynamodb", region_name="eu-west-1").Table(stack.stack.refs["MeetingsTable"])
    with table.batch_writer() as batch:
        for i in range(10_000):
            end_at = now - 60 if i % 1000 == 0 else now + 3600
            room = Room(
                room_key=store.new_room_key(),
                source="kommo",
                owner=lead_owner(SUBDOMAIN, i),
                end_at=end_at,
                created_at=now - 7200,
                state="active",
                meeting_id=str(900_000 + i),
            )
            batch.put_item(Item=room.item())
    scanned: list[int] = []
    query = store.table.query

    def counting_query(**kwargs):
        answer = query(**kwargs)
        scanned.append(answer["ScannedCount"])
        return answer

    store.table.query = counting_query
    summary = sweep(store, whereby, settings)
    assert summary.deleted == 10
    assert summary.records_read == 10
    assert sum(scanned) <= 10, f"read {sum(scanned)} of 10,000 records"
    print(f"sweep cost: {sum(scanned)} records read for 10 expired in a table of 10,000 active rooms")


def test_sweeper_deletes_an_orphan_room_that_no_record_owns(stack, whereby_sim):
    from bridge.whereby.client import RoomRequest, room_prefix
    from bridge.whereby.sweeper import sweep

    store, whereby, settings = ports()
    open_room(stack)
    in_an_hour = datetime.fromtimestamp(time.time() + 3600, UTC)
    # A room of ours whose record never got written (the claim was replaced by a retry, say).
    orphan = whereby.create_meeting(RoomRequest(in_an_hour, prefix=room_prefix("demo", store.new_room_key())))
    foreign = whereby.create_meeting(RoomRequest(in_an_hour, prefix="someone-elses-room-"))
    summary = sweep(store, whereby, settings)
    assert summary.orphans == 1
    remaining = {m["meetingId"] for m in whereby_sim.meetings()}
    assert orphan.meeting_id not in remaining
    assert foreign.meeting_id in remaining  # not ours: never touched
    assert len(remaining) == 2  # the deal's room stays


def test_orphans_whereby_would_not_delete_are_each_counted_failed_and_deleted_by_the_next_run(stack, whereby_sim):
    from bridge.whereby.client import RoomRequest, room_prefix
    from bridge.whereby.sweeper import sweep

    store, whereby, settings = ports()
    in_an_hour = datetime.fromtimestamp(time.time() + 3600, UTC)
    for _ in range(2):
        whereby.create_meeting(RoomRequest(in_an_hour, prefix=room_prefix("demo", store.new_room_key())))
    whereby_sim.fail_next(100, status=500, method="DELETE")  # every try of both deletes
    first = sweep(store, whereby, settings)
    assert (first.failed, first.orphans) == (2, 0)  # SweepFailed: what the sweep's alarm counts
    whereby_sim.reset_faults()  # Whereby is back
    second = sweep(store, whereby, settings)
    assert (second.failed, second.orphans) == (0, 2)
    assert whereby_sim.meetings() == []


def test_orphans_past_the_runs_delete_cap_wait_for_the_next_run_which_says_why(stack, whereby_sim, monkeypatch):
    from bridge import runtime
    from bridge.whereby.client import RoomRequest, room_prefix
    from bridge.whereby.sweeper import sweep

    monkeypatch.setenv("SWEEP_MAX_DELETES", "1")
    runtime.reset()
    store, whereby, settings = ports()
    in_an_hour = datetime.fromtimestamp(time.time() + 3600, UTC)
    for _ in range(2):
        whereby.create_meeting(RoomRequest(in_an_hour, prefix=room_prefix("demo", store.new_room_key())))
    first = sweep(store, whereby, settings)
    assert (first.orphans, first.stopped) == (1, "cap")  # the summary tells the operator why some are left
    second = sweep(store, whereby, settings)
    assert (second.orphans, second.stopped) == (1, "")
    assert whereby_sim.meetings() == []


def test_the_sweep_never_deletes_a_keyed_room_of_another_stack_sharing_the_organisation(stack, whereby_sim):
    """Two stacks (staging and production, say) may share one Whereby organisation; each sweeps only its own."""
    from bridge.store.meetings import new_room_key, stack_tag
    from bridge.whereby.client import RoomRequest, room_prefix
    from bridge.whereby.sweeper import sweep

    store, whereby, settings = ports()
    other_tag = stack_tag("whereby-bridge-prod-MeetingsTable-1A2B3C")
    assert other_tag != store.tag
    in_an_hour = datetime.fromtimestamp(time.time() + 3600, UTC)
    theirs = whereby.create_meeting(RoomRequest(in_an_hour, prefix=room_prefix("demo", new_room_key(other_tag))))
    assert theirs.room_key and theirs.room_key.startswith("z" + other_tag)  # a valid key, of their stack
    ours = whereby.create_meeting(RoomRequest(in_an_hour, prefix=room_prefix("demo", store.new_room_key())))

    summary = sweep(store, whereby, settings, clock=later(2 * 3600))
    assert summary.orphans == 1  # ours, which no record owns
    # Even the close-all run before this stack is removed leaves the other stack's room alone.
    assert stack.invoke("SweeperFunction", {"mode": "close-all"})["orphans"] == 0
    assert [m["meetingId"] for m in whereby_sim.meetings()] == [theirs.meeting_id]
    deleted = {r["path"].rsplit("/", 1)[-1] for r in whereby_sim.requests_seen() if r["method"] == "DELETE"}
    assert deleted == {ours.meeting_id}


def test_sweeper_completes_a_record_left_half_done_by_a_crash(stack, whereby_sim, kommo_sim):
    """A worker died between Whereby's 201 and the record: the sweep finishes the record, the retry the note."""
    from bridge.kommo.deal_rooms import DealPorts, run_job
    from bridge.kommo.jobs import ENSURE_ROOM, Job
    from bridge.store.meetings import MeetingsStore
    from bridge.whereby.sweeper import sweep

    store, whereby, settings = ports()

    class Crash(BaseException):
        pass

    class CrashingStore(MeetingsStore):
        def complete_room(self, room):
            raise Crash

    crashing = CrashingStore(store.table_name)
    job = Job(ENSURE_ROOM, SUBDOMAIN, LEAD, "status", DEMO_STATUS, 1_767_225_000)
    from bridge import runtime

    with pytest.raises(Crash):
        run_job(job, settings, DealPorts(store=crashing, whereby=whereby, kommo=runtime.kommo()))
    assert len(whereby_sim.meetings()) == 1
    [record] = records(stack)
    assert record["state"] == "creating"

    summary = sweep(store, whereby, settings, clock=later(300))
    assert summary.completed == 1 and summary.orphans == 0
    [record] = records(stack)
    [meeting] = whereby_sim.meetings()
    assert record["state"] == "active" and record["meeting_id"] == meeting["meetingId"]
    # The completed record holds Whereby's links and name: they are what the note, the list and the end command use.
    assert (record["room_url"], record["host_room_url"]) == (meeting["roomUrl"], meeting["hostRoomUrl"])
    assert record["room_name"] == meeting["roomName"]
    # The queue retries the job: the note is posted with the room's link, no second room.
    assert run_job(job, settings, DealPorts(store=store, whereby=whereby, kommo=runtime.kommo())) == "exists"
    assert len(whereby_sim.meetings()) == 1
    [note] = kommo_sim.notes(LEAD)
    assert meeting["roomUrl"] in json.dumps(note)


def test_a_429_in_the_middle_of_a_sweep_stops_it_and_the_next_run_finishes(stack, whereby_sim):
    from bridge.whereby.sweeper import sweep

    for lead in range(1, 6):
        open_room(stack, lead=lead)
    assert len(whereby_sim.meetings()) == 5
    store, whereby, settings = ports()
    whereby_sim.fail_next(1, status=429, retry_after=30, method="DELETE")  # longer than a sweep will wait
    first = sweep(store, whereby, settings, clock=later(2 * 3600))
    assert first.stopped == "throttled"
    assert first.deleted < 5
    second = sweep(store, whereby, settings, clock=later(2 * 3600))
    assert second.stopped == ""
    assert first.deleted + second.deleted == 5
    assert whereby_sim.meetings() == []


def test_close_all_before_removing_the_stack_deletes_every_live_room(stack, whereby_sim):
    for lead in (1, 2, 3):
        open_room(stack, lead=lead)
    summary = stack.invoke("SweeperFunction", {"mode": "close-all"})
    assert summary["deleted"] == 3
    assert whereby_sim.meetings() == []
    assert {r["state"] for r in records(stack)} == {"deleted"}
