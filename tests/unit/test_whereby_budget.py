"""Whereby's points are shared: a bulk move makes every room without a 429 or a failure, and people still get rooms."""

from __future__ import annotations

import itertools
import json
import threading
from pathlib import Path
from urllib.parse import urlencode

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from devstack.template import create_resources, load_template
from tests.conftest import DEMO_STATUS, SECRET, SUBDOMAIN

REGION = "eu-west-1"
EVENTS = Path(__file__).resolve().parents[2] / "events"
TOKEN = urlencode({"token": SECRET["kommo_webhook_token"]})
FORM = {"content-type": "application/x-www-form-urlencoded"}
LOST = 143


class FakeTime:
    """A clock that only moves when someone sleeps on it."""

    def __init__(self, start: float) -> None:
        self.now = start
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def table():
    """The template's meetings table in moto, nothing else."""
    with mock_aws():
        created = create_resources(
            load_template(),
            dynamodb=boto3.client("dynamodb", region_name=REGION),
            sqs=boto3.client("sqs", region_name=REGION),
            secretsmanager=boto3.client("secretsmanager", region_name=REGION),
            secret_value=SECRET,
        )
        yield boto3.resource("dynamodb", region_name=REGION).Table(created.refs["MeetingsTable"])


def budget_of(table, time: FakeTime | None = None, points: int = 100, reserve: int = 30, window: float = 60.0):
    from bridge.whereby.budget import PointsBudget

    if time is None:
        return PointsBudget(table, points, reserve, window)
    return PointsBudget(table, points, reserve, window, clock=time.clock, sleep=time.sleep)


def takes_until_refused(budget, points: int, *, interactive: bool) -> int:
    from bridge.core.errors import BudgetExhausted

    granted = 0
    while True:
        try:
            budget.take(points, interactive=interactive)
        except BudgetExhausted:
            return granted
        granted += points


# the budget itself ----------------------------------------------------------------------------------------------
def test_points_spent_come_back_a_minute_later_and_never_more_than_the_plan(table):
    time = FakeTime(1_800_000_000.0)
    budget = budget_of(table, time)
    assert budget.available(interactive=True) == 100  # a fresh budget is full, not more
    assert takes_until_refused(budget, 3, interactive=False) == 69  # 23 rooms; 70 is the background's share
    time.now += 30
    assert budget.available(interactive=False) == 1  # a sliding minute: nothing came back yet
    time.now += 31.5
    assert budget.available(interactive=True) == 100
    time.now += 3600  # a quiet hour stores up nothing
    assert budget.available(interactive=True) == 100
    assert takes_until_refused(budget, 3, interactive=True) == 99


_clock_bases = itertools.count(1_800_000_000, 100_000)  # each example far from the last: its spending is gone


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(st.floats(0, 25), st.sampled_from([1, 2, 3]), st.booleans()),
        min_size=1,
        max_size=40,
    )
)
def test_no_minute_ever_sees_more_than_the_plan_and_the_background_never_touches_the_reserve(table, calls):
    from bridge.core.errors import BudgetExhausted

    time = FakeTime(float(next(_clock_bases)))
    budget = budget_of(table, time)
    granted: list[tuple[float, int, bool]] = []

    def spent_within(seconds: float, at: float, background_only: bool = False) -> int:
        return sum(
            points
            for moment, points, interactive in granted
            if at - seconds < moment <= at and not (background_only and interactive)
        )

    for advance, points, interactive in calls:
        time.now += advance
        try:
            budget.take(points, interactive=interactive)
        except BudgetExhausted:
            # Refused only when it would have gone over (a slot of a second is the margin for the request's trip).
            over_plan = spent_within(61.0, time.now) + points > 100
            over_share = not interactive and spent_within(61.0, time.now, background_only=True) + points > 70
            assert over_plan or over_share
            continue
        granted.append((time.now, points, interactive))
        assert spent_within(60.0, time.now) <= 100
        assert spent_within(60.0, time.now, background_only=True) <= 70


def test_two_workers_taking_at_once_never_overspend(table, atomic_dynamodb):
    budget = budget_of(table)
    totals: list[int] = []

    def worker() -> None:
        from bridge.core.errors import BudgetExhausted

        mine = 0
        for _ in range(15):
            try:
                budget.take(3, interactive=False)
                mine += 3
            except BudgetExhausted:
                pass
        totals.append(mine)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(totals) == 69  # every point of the background's 70 that fits a room, and not one more
    assert budget.available(interactive=True) == 31


def test_background_callers_leave_the_reserve_and_a_person_can_spend_it(table):
    budget = budget_of(table, FakeTime(1_800_000_000.0))
    assert takes_until_refused(budget, 3, interactive=False) == 69
    assert takes_until_refused(budget, 1, interactive=False) == 1  # a read still fits the background's share
    assert takes_until_refused(budget, 3, interactive=True) == 30  # ten rooms for people
    assert budget.available(interactive=False) == 0 and budget.available(interactive=True) == 0


def test_the_rooms_people_make_do_not_slow_the_bulk_move(table):
    budget = budget_of(table, FakeTime(1_800_000_000.0))
    for _ in range(5):
        budget.take(3, interactive=True)  # five people started a call
    assert takes_until_refused(budget, 3, interactive=False) == 69  # the bulk move still gets its whole share
    assert takes_until_refused(budget, 3, interactive=True) == 15  # and people the rest of the minute


def test_a_caller_waits_for_points_as_long_as_it_may_then_is_told_when_to_come_back(table):
    from bridge.core.errors import BudgetExhausted

    time = FakeTime(1_800_000_000.0)
    budget = budget_of(table, time)
    started = time.now
    takes_until_refused(budget, 3, interactive=False)
    with pytest.raises(BudgetExhausted) as refused:
        budget.take(3, interactive=False, wait_until=time.now + 10)
    assert time.now == pytest.approx(started + 10)  # it waited all it was allowed to
    assert 45 < refused.value.retry_after <= 51
    budget.take(3, interactive=False, wait_until=time.now + 60)
    assert 60 < time.now - started <= 62  # served as soon as the first points of the minute came back


def test_a_whereby_429_holds_every_caller_off_for_the_time_it_named(table):
    from bridge.core.errors import BudgetExhausted

    time = FakeTime(1_800_000_000.0)
    budget = budget_of(table, time)
    budget.hold_off(20)
    for interactive in (False, True):
        with pytest.raises(BudgetExhausted) as refused:
            budget.take(1, interactive=interactive)
        assert refused.value.retry_after == pytest.approx(20)
    time.now += 20
    budget.take(3, interactive=False)
    budget.hold_off(3600)  # longer than Whereby's minute can mean: a minute at most
    with pytest.raises(BudgetExhausted) as refused:
        budget.take(1, interactive=True)
    assert refused.value.retry_after == pytest.approx(60)


def test_jobs_queued_before_hand_backs_existed_still_run_as_the_first_generation():
    from bridge.kommo.jobs import Job

    [record] = json.loads((EVENTS / "worker-ensure-room.sqs.json").read_text())["Records"]
    job = Job.from_json(record["body"])
    assert job.generation == 0
    assert job.to_json() == record["body"]
    assert job.dedup_id == record["attributes"]["MessageDeduplicationId"]
    later = job.handed_back()
    assert Job.from_json(later.to_json()) == later and later.generation == 1
    assert later.group_id == job.group_id and later.dedup_id != job.dedup_id


# through the functions ------------------------------------------------------------------------------------------
@pytest.fixture
def points(stack, monkeypatch):
    """Set the stack's points budget (per window of ``window`` seconds) and return it."""
    from bridge import runtime

    def configure(per_window: int, reserve: int, window: float = 60.0):
        monkeypatch.setenv("WHEREBY_POINTS_PER_MINUTE", str(per_window))
        monkeypatch.setenv("WHEREBY_CHAT_RESERVE_POINTS", str(reserve))
        monkeypatch.setenv("WHEREBY_BUDGET_WINDOW_SECONDS", str(window))
        runtime.reset()
        return runtime.points_budget()

    return configure


def spend_the_background_points() -> None:
    from bridge import runtime

    takes_until_refused(runtime.points_budget(), 1, interactive=False)


def stage_body(leads: list[int], status: int = DEMO_STATUS, at: int = 1_767_225_000) -> bytes:
    """One Kommo delivery for several leads, as a mass action sends it."""
    fields = [("account[subdomain]", SUBDOMAIN), ("account[id]", "16503244")]
    for i, lead in enumerate(leads):
        fields += [
            (f"leads[status][{i}][id]", str(lead)),
            (f"leads[status][{i}][status_id]", str(status)),
            (f"leads[status][{i}][pipeline_id]", "7712345"),
            (f"leads[status][{i}][updated_at]", str(at)),
        ]
    return urlencode(fields).encode()


def post(stack, path: str, body: bytes) -> None:
    response = stack.request("POST", path, query=TOKEN, headers=FORM, body=body)
    assert response["statusCode"] == 200, response


def metric(lines: list[str], name: str) -> float:
    """The sum of a metric over the EMF lines the functions printed."""
    total = 0.0
    for line in lines:
        if line.startswith("{") and '"_aws"' in line:
            values = json.loads(line).get(name, [])
            total += sum(values) if isinstance(values, list) else values
    return total


def logged(caplog, field: str) -> list[str]:
    """One field of every log line (the message, or an extra such as ``reason`` or ``outcome``)."""
    return [str(getattr(record, field, "")) for record in caplog.records]


def waiting_jobs(stack) -> list[dict]:
    sqs = boto3.client("sqs", region_name=REGION)
    found = []
    while batch := sqs.receive_message(
        QueueUrl=stack.stack.refs["JobsQueue"], MaxNumberOfMessages=10, VisibilityTimeout=300
    ).get("Messages", []):
        found += [json.loads(message["Body"]) for message in batch]
    return found


def live_rooms(stack) -> list[dict]:
    table = boto3.resource("dynamodb", region_name=REGION).Table(stack.stack.refs["MeetingsTable"])
    rooms = [item for item in table.scan()["Items"] if item["pk"].startswith("ROOM#")]  # inspection only
    return [room for room in rooms if room["state"] != "deleted"]


def test_a_bulk_move_bigger_than_a_minutes_points_makes_every_room_with_no_429_and_no_failure(
    stack, whereby_sim, points, log_lines
):
    # Time compressed thirtyfold on both sides: a "minute" of 12 points lasts 2 s (3 rooms for the background).
    points(12, 3, window=2.0)
    whereby_sim.set_budget(12, time_scale=30)
    leads = list(range(501, 507))
    post(stack, "/kommo/stage", stage_body(leads))
    drained = stack.drain()
    lines = log_lines()
    assert len(whereby_sim.meetings()) == len(leads)
    assert drained.failed == 0 and metric(lines, "JobsFailed") == 0
    assert whereby_sim.budget_refusals == 0  # the shared count kept every call under Whereby's budget
    assert metric(lines, "JobsDeferred") == 0  # short waits are waited out inside the invocation
    assert stack.queue_depth("JobsQueue") == 0 and stack.queue_depth("JobsDeadLetterQueue") == 0


def test_a_job_that_cannot_get_points_before_the_worker_runs_out_of_time_goes_back_to_the_queue_unharmed(
    stack, whereby_sim, points, log_lines
):
    points(12, 3)  # three rooms a minute for the background
    post(stack, "/kommo/stage", stage_body([601, 602, 603, 604, 605]))
    drained = stack.drain(max_rounds=1, timeout=1.5)  # a short invocation: it may wait one second for points
    lines = log_lines()
    assert len(whereby_sim.meetings()) == 3
    assert (drained.processed, drained.failed) == (5, 0)
    assert metric(lines, "JobsDeferred") == 2 and metric(lines, "JobsFailed") == 0
    waiting = waiting_jobs(stack)
    assert sorted(job["lead_id"] for job in waiting) == [604, 605]
    assert {job["generation"] for job in waiting} == {1}
    assert stack.queue_depth("JobsDeadLetterQueue") == 0


def test_throttling_by_another_client_of_the_organisation_hands_jobs_back_instead_of_failing_them(
    stack, whereby_sim, points, log_lines
):
    points(30, 3, window=1.0)
    # Someone else spent the organisation's points: Whereby refuses two creates for longer than a worker retries.
    whereby_sim.fail_next(2, status=429, retry_after=30, method="POST")
    leads = [701, 702, 703, 704]
    post(stack, "/kommo/stage", stage_body(leads))
    stack.drain()
    lines = log_lines()
    assert len(whereby_sim.meetings()) == len(leads)
    assert metric(lines, "JobsDeferred") == 2 and metric(lines, "JobsFailed") == 0
    assert stack.queue_depth("JobsQueue") == 0 and stack.queue_depth("JobsDeadLetterQueue") == 0


def test_a_handed_back_room_job_overtaken_by_the_deals_close_leaves_no_live_room(stack, whereby_sim, log_lines, caplog):
    post(stack, "/kommo/stage", stage_body([801], at=1_767_225_000))
    post(stack, "/kommo/close", stage_body([801], status=LOST, at=1_767_225_060))
    whereby_sim.fail_next(1, status=429, retry_after=30, method="POST")
    stack.drain()
    lines = log_lines()
    # The ensure-room went back behind the close; when its turn came the deal was closed, so it did nothing.
    outcomes = logged(caplog, "outcome")
    assert outcomes.index("handed back (generation 1)") < outcomes.index("closed 0 room(s)")
    assert "skipped: the deal has moved on since this event" in outcomes
    assert whereby_sim.meetings() == [] and live_rooms(stack) == []
    assert metric(lines, "JobsFailed") == 0 and stack.queue_depth("JobsDeadLetterQueue") == 0


def test_a_handed_back_close_overtaken_by_the_deal_coming_back_still_leaves_the_deal_one_room(
    stack, whereby_sim, log_lines, caplog
):
    post(stack, "/kommo/stage", stage_body([802], at=1_767_225_000))
    stack.drain()
    [first] = whereby_sim.meetings()
    post(stack, "/kommo/close", stage_body([802], status=LOST, at=1_767_225_060))
    post(stack, "/kommo/stage", stage_body([802], at=1_767_225_120))  # back into Demo a minute later
    whereby_sim.fail_next(1, status=429, retry_after=11, method="DELETE")  # longer than a call waits (10 s)
    stack.drain()
    lines = log_lines()
    # The close was recorded before Whereby throttled its delete, so the deal's return finds its slot free and
    # gets a room of its own; the close, handed back, then finishes what it began: the lost deal's room goes.
    outcomes = [o for o in logged(caplog, "outcome") if o]
    assert outcomes[-3:] == ["handed back (generation 1)", "created", "closed 1 room(s)"], outcomes
    [kept] = whereby_sim.meetings()
    assert kept["meetingId"] != first["meetingId"]
    assert [room["meeting_id"] for room in live_rooms(stack)] == [kept["meetingId"]]
    assert metric(lines, "JobsFailed") == 0 and stack.queue_depth("JobsDeadLetterQueue") == 0


def test_a_job_handed_back_a_hundred_times_fails_normally_and_says_why(stack, whereby_sim, log_lines, caplog):
    from bridge.kommo.jobs import ENSURE_ROOM, Job

    job = Job(ENSURE_ROOM, SUBDOMAIN, 901, "status", DEMO_STATUS, 1_767_225_000, generation=100)
    boto3.client("sqs", region_name=REGION).send_message(
        QueueUrl=stack.stack.refs["JobsQueue"],
        MessageBody=job.to_json(),
        MessageGroupId=job.group_id,
        MessageDeduplicationId=job.dedup_id,
    )
    whereby_sim.fail_next(1, status=429, retry_after=30, method="POST")
    assert stack.drain(max_rounds=1).failed == 1
    lines = log_lines()
    assert metric(lines, "JobsFailed") == 1 and metric(lines, "JobsDeferred") == 0
    [reason] = [reason for reason in logged(caplog, "reason") if reason.startswith("ThrottledTooLong")]
    assert "handed back 100 times and still throttled" in reason and "429" in reason
    assert [j["generation"] for j in waiting_jobs(stack)] == [100]  # retried by SQS as itself, not sent again


def test_with_the_shared_count_off_a_throttled_job_fails_and_is_retried_as_before(
    stack, whereby_sim, log_lines, monkeypatch
):
    from bridge import runtime

    monkeypatch.setenv("WHEREBY_POINTS_PER_MINUTE", "0")
    runtime.reset()
    post(stack, "/kommo/stage", stage_body([951]))
    whereby_sim.fail_next(1, status=429, retry_after=30, method="POST")
    assert stack.drain(max_rounds=1).failed == 1
    assert stack.drain().processed == 1
    lines = log_lines()
    assert metric(lines, "JobsFailed") == 1 and metric(lines, "JobsDeferred") == 0
    assert len(whereby_sim.meetings()) == 1


def test_a_sweep_during_a_bulk_move_stops_for_the_budget_and_the_next_run_finishes(stack, whereby_sim, points):
    import time

    budget = points(12, 3, window=60.0)
    clock = FakeTime(time.time())
    budget.clock = clock.clock  # the stack's own budget, on a clock that moves only when told
    post(stack, "/kommo/stage", stage_body([1001, 1002]))
    stack.drain()
    spend_the_background_points()  # the worker is still busy with a bulk move
    summary = stack.invoke("SweeperFunction", {"mode": "close-all"})
    assert (summary["stopped"], summary["deleted"]) == ("budget", 0)
    assert len(whereby_sim.meetings()) == 2
    clock.now += 61  # the next run, once the points came back
    summary = stack.invoke("SweeperFunction", {"mode": "close-all"})
    assert (summary["stopped"], summary["deleted"]) == ("", 2)
    assert whereby_sim.meetings() == []


def test_during_a_bulk_move_a_person_still_gets_a_room_from_the_reserve(stack, whereby_sim, points):
    from tests.unit.test_mattermost_command import assert_ephemeral, live_records, run

    points(12, 3, window=15.0)
    spend_the_background_points()  # the bulk move took every point it may
    posted = run(stack, "Demo")
    assert posted["response_type"] == "in_channel" and "Join the Whereby room" in posted["text"]
    # Now the reserve is spent too: the next person is told when to try again, and nothing is left behind.
    assert_ephemeral(run(stack, "Again"), "Whereby is busy", "seconds", "No room was made")
    assert len(whereby_sim.meetings()) == 1 and len(live_records(stack)) == 1
