"""Webhooks Kommo never sends: the scheduled reconciliation reads Kommo's event log and enqueues what they missed.

Kommo's side is the simulator's event log (a user moving a card in Kommo's interface, with no webhook sent); the
bridge's side is the template's KommoReconcileFunction, invoked through the harness, and the worker draining the
queue. Nothing is patched.
"""

from __future__ import annotations

import itertools
import json
import time

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core.config import ConfigError, settings_from
from bridge.kommo.client import LEAD_DELETED, LEAD_RESTORED, LEAD_STATUS_CHANGED, KommoEvent
from bridge.kommo.intake import close_job_kind, stage_job_kind
from bridge.kommo.jobs import CLOSE_ROOMS, ENSURE_ROOM, RESTORE_LEAD, Job
from bridge.kommo.reconcile import job_for, jobs_for
from bridge.kommo.webhook import parse_webhook
from tests.conftest import DEMO_STATUS, STAGE_RULES, SUBDOMAIN
from tests.kommo_bodies import status_body
from tests.unit.test_close_and_sweep import post

LEAD = 41170023
OTHER_STATUS = 61234599  # a stage with no rule: the bridge does nothing there
PERIOD = 600  # the template's default ReconcileSchedule, rate(10 minutes)
OVERLAP, DELAY = 120, 30
ROOM_NOTE = "Whereby video room for Demo"
LOST_NOTE = "Video room closed: deal lost."


# ----- helpers -----


def note_heads(kommo_sim, lead: int = LEAD) -> list[str]:
    return [note["params"]["text"].splitlines()[0] for note in kommo_sim.notes(lead)]


def events_requests(kommo_sim) -> list[dict]:
    return [r for r in kommo_sim.requests_seen() if r["path"] == "/api/v4/events"]


def window_of(request: dict) -> tuple[int, int]:
    query = request["query"]
    return int(query["filter[created_at][from]"]), int(query["filter[created_at][to]"])


def state_item(stack) -> dict:
    table = boto3.resource("dynamodb", region_name="eu-west-1").Table(stack.stack.refs["MeetingsTable"])
    return table.get_item(Key={"pk": "RECONCILE", "sk": "STATE"}).get("Item") or {}


def checkpoint(stack) -> int:
    return int(state_item(stack)["checkpoint"])


def queued_jobs(stack) -> list[Job]:
    sqs = boto3.client("sqs", region_name="eu-west-1")
    messages = sqs.receive_message(QueueUrl=stack.stack.refs["JobsQueue"], MaxNumberOfMessages=10)
    return [Job.from_json(message["Body"]) for message in messages.get("Messages", [])]


def run(stack) -> dict:
    """One scheduled run, as EventBridge Scheduler invokes it."""
    return stack.invoke("KommoReconcileFunction", {"source": "schedule"})


def run_at(now: float, max_pages: int = 20):
    """One run with the clock at ``now`` (the use-case with the function's own ports)."""
    from bridge import runtime
    from bridge.kommo.reconcile import reconcile

    ports = (runtime.kommo_reconcile(), runtime.job_queue(), runtime.store(), runtime.settings())
    return reconcile(*ports, clock=lambda: now, max_pages=max_pages)


def fillers(kommo_sim, count: int, first_at: int) -> None:
    """Deals moving between stages the bridge has no rule for, one a second."""
    for i in range(count):
        kommo_sim.move_lead(900_000 + i, OTHER_STATUS, at=first_at + i)


@pytest.fixture
def bridge(stack, monkeypatch):
    """The stack with the reconciler's client unthrottled, so tests do not wait out its 1 request/s."""
    monkeypatch.setenv("KOMMO_RECONCILE_REQUESTS_PER_SECOND", "200")
    from bridge import runtime

    runtime.reset()
    return stack


# ----- a missed webhook costs one period, never a room -----


def test_a_missed_stage_webhook_gives_the_deal_one_room_and_one_note(bridge, whereby_sim, kommo_sim):
    kommo_sim.move_lead(LEAD, DEMO_STATUS, at=int(time.time()) - 300)

    summary = run(bridge)
    bridge.drain()

    assert summary["jobs"] == {ENSURE_ROOM: 1} and summary["stopped"] == ""
    assert len(whereby_sim.meetings()) == 1
    assert note_heads(kommo_sim) == [ROOM_NOTE]


def test_the_webhook_arriving_after_its_reconciliation_changes_nothing(bridge, whereby_sim, kommo_sim):
    event = kommo_sim.move_lead(LEAD, DEMO_STATUS, at=int(time.time()) - 300)
    run(bridge)
    bridge.drain()

    assert post(bridge, "/kommo/stage", status_body(LEAD, DEMO_STATUS, event["created_at"]))[0] == 200
    drained = bridge.drain()

    assert len(whereby_sim.meetings()) == 1
    assert note_heads(kommo_sim) == [ROOM_NOTE]
    assert (drained.failed, bridge.queue_depth("JobsDeadLetterQueue")) == (0, 0)


def test_a_webhook_that_did_arrive_is_not_doubled_by_the_reconciliation(bridge, whereby_sim, kommo_sim):
    event = kommo_sim.move_lead(LEAD, DEMO_STATUS, at=int(time.time()) - 300)
    post(bridge, "/kommo/stage", status_body(LEAD, DEMO_STATUS, event["created_at"]))
    bridge.drain()

    run(bridge)
    drained = bridge.drain()

    assert len(whereby_sim.meetings()) == 1
    assert note_heads(kommo_sim) == [ROOM_NOTE]
    assert (drained.failed, bridge.queue_depth("JobsDeadLetterQueue")) == (0, 0)


def test_reconciling_twice_changes_nothing(bridge, whereby_sim, kommo_sim):
    # Inside the overlap: the second run reads the event again and must not act on it twice.
    kommo_sim.move_lead(LEAD, DEMO_STATUS, at=int(time.time()) - DELAY - 20)
    first = run(bridge)
    bridge.drain()

    second = run(bridge)
    drained = bridge.drain()

    assert first["jobs"] == {ENSURE_ROOM: 1}
    assert second["events_read"] == 1 and second["jobs"] == {}
    assert (drained.processed, drained.failed, bridge.queue_depth("JobsDeadLetterQueue")) == (0, 0, 0)
    assert len(whereby_sim.meetings()) == 1
    assert note_heads(kommo_sim) == [ROOM_NOTE]


def test_a_missed_lost_webhook_deletes_the_room_and_posts_the_close_note_once(bridge, whereby_sim, kommo_sim):
    now = int(time.time())
    post(bridge, "/kommo/stage", status_body(LEAD, DEMO_STATUS, now - 900))
    bridge.drain()
    assert len(whereby_sim.meetings()) == 1
    lost = kommo_sim.move_lead(LEAD, 143, at=now - 300)

    summary = run(bridge)
    bridge.drain()
    assert summary["jobs"] == {CLOSE_ROOMS: 1}
    assert whereby_sim.meetings() == []
    assert note_heads(kommo_sim) == [ROOM_NOTE, LOST_NOTE]

    # The late webhook and another run change nothing.
    post(bridge, "/kommo/close", status_body(LEAD, 143, lost["created_at"]))
    run(bridge)
    drained = bridge.drain()
    assert whereby_sim.meetings() == []
    assert (drained.failed, bridge.queue_depth("JobsDeadLetterQueue")) == (0, 0)
    assert note_heads(kommo_sim) == [ROOM_NOTE, LOST_NOTE]


def test_a_missed_delete_webhook_deletes_the_room_without_a_note(bridge, whereby_sim, kommo_sim):
    now = int(time.time())
    post(bridge, "/kommo/stage", status_body(LEAD, DEMO_STATUS, now - 900))
    bridge.drain()
    kommo_sim.delete_lead(LEAD, at=now - 300)

    summary = run(bridge)
    bridge.drain()

    assert summary["jobs"] == {CLOSE_ROOMS: 1}
    assert whereby_sim.meetings() == []
    assert note_heads(kommo_sim) == [ROOM_NOTE]


def test_a_restored_lead_is_handed_to_the_worker_as_a_restore_job(bridge, kommo_sim):
    at = int(time.time()) - 200
    kommo_sim.restore_lead(LEAD, at=at)

    summary = run(bridge)

    assert summary["jobs"] == {RESTORE_LEAD: 1}
    assert queued_jobs(bridge) == [Job(RESTORE_LEAD, SUBDOMAIN, LEAD, "restore", None, at)]


def test_events_of_statuses_without_a_rule_are_ignored(bridge, whereby_sim, kommo_sim):
    now = int(time.time())
    kommo_sim.move_lead(LEAD, OTHER_STATUS, at=now - 400)
    kommo_sim.move_lead(LEAD + 1, 1, at=now - 300)

    summary = run(bridge)

    assert summary["events_read"] == 2 and summary["jobs"] == {}
    assert bridge.queue_depth("JobsQueue") == 0
    assert whereby_sim.requests_seen() == [] and kommo_sim.notes() == []


# ----- reading the event log -----


def test_every_page_is_read_and_a_deals_changes_apply_in_the_order_they_happened(bridge, whereby_sim, kommo_sim):
    now = int(time.time())
    # The deal enters Demo (the oldest event, on the last page) and is lost (the newest, on the first page).
    kommo_sim.move_lead(LEAD, DEMO_STATUS, at=now - 900)
    fillers(kommo_sim, 150, first_at=now - 800)
    kommo_sim.move_lead(LEAD, 143, at=now - 100)

    summary = run(bridge)
    bridge.drain()

    assert (summary["pages"], summary["events_read"]) == (2, 152)
    assert summary["jobs"] == {ENSURE_ROOM: 1, CLOSE_ROOMS: 1}
    pages = [r["query"] for r in events_requests(kommo_sim)]
    assert [(q["page"], q["limit"], q["filter[entity]"]) for q in pages] == [("1", "100", "lead"), ("2", "100", "lead")]
    assert pages[0]["filter[type]"] == "lead_status_changed,lead_deleted,lead_restored"
    # Applied in Kommo's order: the room was made, then closed. The other order would have left no note at all.
    assert note_heads(kommo_sim) == [ROOM_NOTE, LOST_NOTE]
    assert whereby_sim.meetings() == []


def test_the_first_run_looks_back_two_periods_and_replays_no_older_history(bridge, whereby_sim, kommo_sim):
    now = int(time.time())
    kommo_sim.move_lead(LEAD, DEMO_STATUS, at=now - 2 * PERIOD - 60)  # before the bridge was watching
    kommo_sim.move_lead(LEAD + 1, DEMO_STATUS, at=now - 2 * PERIOD + 60)

    summary = run_at(now)

    assert [window_of(r) for r in events_requests(kommo_sim)] == [(now - 2 * PERIOD, now - DELAY)]
    assert summary.jobs == {ENSURE_ROOM: 1}
    assert [job.lead_id for job in queued_jobs(bridge)] == [LEAD + 1]
    assert checkpoint(bridge) == now - DELAY


def test_the_checkpoint_advances_and_the_next_run_reads_from_it_minus_the_overlap(bridge, kommo_sim):
    now = int(time.time())
    run_at(now)
    assert checkpoint(bridge) == now - DELAY

    kommo_sim.move_lead(LEAD, 143, at=now + 300)
    summary = run_at(now + PERIOD)

    windows = [window_of(r) for r in events_requests(kommo_sim)]
    assert windows[1] == (now - DELAY - OVERLAP, now + PERIOD - DELAY)
    assert summary.jobs == {CLOSE_ROOMS: 1}
    assert checkpoint(bridge) == now + PERIOD - DELAY


def test_a_long_gap_is_read_in_windows_of_at_most_an_hour(bridge, kommo_sim):
    now = int(time.time())
    run_at(now)
    kommo_sim.move_lead(LEAD, DEMO_STATUS, at=now + 2 * 3600)

    summary = run_at(now + 3 * 3600)

    windows = [window_of(r) for r in events_requests(kommo_sim)][1:]
    assert all(end - start + 1 <= 3600 for start, end in windows)
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(windows))  # no gap between windows
    assert windows[0][0] == now - DELAY - OVERLAP and windows[-1][1] == now + 3 * 3600 - DELAY
    assert summary.windows == len(windows) == 4 and summary.jobs == {ENSURE_ROOM: 1}


@pytest.mark.parametrize(("status", "stopped"), [(429, "throttled"), (500, "unavailable")])
def test_a_kommo_error_mid_run_keeps_the_checkpoint_and_the_next_run_catches_up(
    bridge, whereby_sim, kommo_sim, status, stopped
):
    now = int(time.time())
    run_at(now - PERIOD)
    saved = checkpoint(bridge)
    kommo_sim.move_lead(LEAD, DEMO_STATUS, at=now - 400)  # the oldest: on the second page
    fillers(kommo_sim, 120, first_at=now - 300)
    kommo_sim.fail_next(2, status=status, method="GET", after=1)  # page 1 answers; page 2 fails, and its retry

    failed = run_at(now)
    assert failed.stopped == stopped and failed.jobs == {}
    assert checkpoint(bridge) == saved
    assert bridge.queue_depth("JobsQueue") == 0

    caught_up = run_at(now + 60)
    bridge.drain()
    assert caught_up.stopped == "" and caught_up.jobs == {ENSURE_ROOM: 1}
    assert checkpoint(bridge) == now + 60 - DELAY
    assert len(whereby_sim.meetings()) == 1


def test_a_body_that_is_not_an_events_page_stops_the_run_and_keeps_the_checkpoint(bridge, kommo_sim):
    now = int(time.time())
    run_at(now - PERIOD)
    saved = checkpoint(bridge)
    kommo_sim.fail_next(1, status=200, method="GET")  # a 200 whose body is a problem document

    summary = run_at(now)

    assert summary.stopped == "unavailable"
    assert checkpoint(bridge) == saved


def test_a_window_cut_short_by_the_page_cap_keeps_the_checkpoint_and_says_so(
    bridge, monkeypatch, whereby_sim, kommo_sim, caplog, capsys
):
    now = int(time.time())
    kommo_sim.move_lead(LEAD, DEMO_STATUS, at=now - 900)
    fillers(kommo_sim, 150, first_at=now - 800)
    monkeypatch.setenv("RECONCILE_MAX_PAGES", "1")
    from bridge import runtime

    runtime.reset()
    from bridge.core.observability import metrics

    metrics.clear_metrics()  # direct runs of earlier tests add to the same process-wide metrics, unflushed

    capped = run(bridge)

    assert capped["stopped"] == "cap" and capped["pages"] == 1 and capped["jobs"] == {}
    assert checkpoint(bridge) == capped["checkpoint"] < now - DELAY
    assert bridge.queue_depth("JobsQueue") == 0
    [warning] = [r for r in caplog.records if r.getMessage().startswith("kommo reconciliation stopped early")]
    assert warning.levelname == "WARNING" and warning.stopped == "cap"
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    behind = [value for m in emitted for value in m.get("ReconcileBehind", [])]
    assert behind == [1.0]  # what KommoReconcileBehindAlarm sums

    # The cut window is read in smaller pieces next time, so the reading gets past it.
    summary = run_at(time.time())
    bridge.drain()
    assert summary.stopped == "" and summary.windows > 1 and summary.jobs == {ENSURE_ROOM: 1}
    assert len(whereby_sim.meetings()) == 1


def test_the_reconcilers_kommo_calls_are_spaced_at_its_configured_rate(stack, kommo_sim):
    """At the default 1 request/s: with the two workers' 2 x 3/s, Kommo's 7/s per integration holds."""
    from bridge import runtime
    from bridge.store.meetings import ReconcileState

    assert runtime.settings().kommo_reconcile_requests_per_second == 1.0
    runtime.store().save_reconcile_state(ReconcileState(checkpoint=int(time.time()) - 2 * 3600))

    summary = run(stack)

    arrivals = [r["at"] for r in events_requests(kommo_sim)]
    assert summary["pages"] == len(arrivals) == 3
    # The client spaces departures; arrivals carry a little network jitter, hence the margins. At the workers'
    # 3/s the gaps would be 0.33 s.
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert all(gap >= 0.8 for gap in gaps), gaps
    assert all(at - arrivals[0] >= k - 0.1 for k, at in enumerate(arrivals)), gaps


def test_of_two_runs_at_once_the_one_that_got_further_keeps_its_checkpoint(stack):
    from bridge import runtime
    from bridge.store.meetings import ReconcileState

    store = runtime.store()
    store.save_reconcile_state(ReconcileState(checkpoint=2_000, seen={"b": 1_990}))
    store.save_reconcile_state(ReconcileState(checkpoint=1_000, seen={"a": 990}))  # the slower run, finishing later

    assert store.reconcile_state() == ReconcileState(checkpoint=2_000, seen={"b": 1_990})


def test_without_a_kommo_account_the_reconciliation_does_nothing(stack, kommo_sim, monkeypatch):
    monkeypatch.setenv("KOMMO_SUBDOMAIN", "")
    from bridge import runtime

    runtime.reset()

    assert run(stack)["stopped"] == "off"
    assert kommo_sim.requests_seen() == []


# ----- the job a change makes -----

SETTINGS = settings_from(
    {
        "TABLE_NAME": "t",
        "SECRET_ID": "s",
        "KOMMO_SUBDOMAIN": SUBDOMAIN,
        "STAGE_RULES": json.dumps(STAGE_RULES),
    }
)


@settings(max_examples=60, deadline=None)
@given(
    lead=st.integers(1, 2**40),
    status=st.sampled_from([DEMO_STATUS, 142, 143]),
    updated_at=st.integers(1, 2**33),
)
def test_a_reconciled_change_has_the_same_job_identity_as_its_webhook(lead, status, updated_at):
    [change] = parse_webhook(status_body(lead, status, updated_at)).events
    kind = stage_job_kind(change, SETTINGS) or close_job_kind(change, SETTINGS)
    from_webhook = Job.for_event(kind, SETTINGS.kommo_subdomain, change, received_at=0)

    event = KommoEvent("01abc", LEAD_STATUS_CHANGED, lead, updated_at, status, 7712345)
    from_log = job_for(event, SETTINGS)

    assert from_log == from_webhook
    assert from_log.dedup_id == from_webhook.dedup_id and from_log.group_id == from_webhook.group_id


_events = st.lists(
    st.builds(
        KommoEvent,
        id=st.text("0123456789abcdef", min_size=1, max_size=8),
        type=st.sampled_from([LEAD_STATUS_CHANGED, LEAD_DELETED, LEAD_RESTORED, "lead_added"]),
        entity_id=st.integers(1, 5),
        created_at=st.integers(0, 50),
        status_id=st.sampled_from([None, DEMO_STATUS, OTHER_STATUS, 142, 143]),
    ),
    max_size=30,
    unique_by=lambda event: event.id,  # Kommo's event ids are unique
)


@settings(max_examples=100, deadline=None)
@given(events=_events, data=st.data())
def test_jobs_follow_the_order_of_the_changes_whatever_order_kommo_lists_them_in(events, data):
    shuffled = data.draw(st.permutations(events))
    jobs = jobs_for(shuffled, SETTINGS)

    assert jobs == jobs_for(events, SETTINGS)
    assert [job.event_at for job in jobs] == sorted(job.event_at for job in jobs)
    assert len({job.dedup_id for job in jobs}) == len(jobs)
    for job in jobs:
        if job.action == "status":
            assert job.status_id in {DEMO_STATUS, 142, 143}
            assert job.kind == (ENSURE_ROOM if job.status_id == DEMO_STATUS else CLOSE_ROOMS)
    acted_on = {
        (e.entity_id, e.created_at)
        for e in events
        if e.type in (LEAD_DELETED, LEAD_RESTORED) or e.status_id in {DEMO_STATUS, 142, 143}
        if e.type != "lead_added"
    }
    assert {(job.lead_id, job.event_at) for job in jobs} == acted_on


# ----- settings -----


def test_the_reconciliation_settings_default_to_one_request_a_second_every_ten_minutes():
    defaults = settings_from({"TABLE_NAME": "t", "SECRET_ID": "s"})
    assert defaults.kommo_reconcile_requests_per_second == 1.0
    assert 2 * defaults.kommo_requests_per_second + defaults.kommo_reconcile_requests_per_second <= 7
    assert defaults.reconcile_period_seconds == 600
    custom = settings_from({"TABLE_NAME": "t", "RECONCILE_SCHEDULE": "rate(1 hour)"})
    assert custom.reconcile_period_seconds == 3600


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RECONCILE_SCHEDULE", "cron(0/10 * * * ? *)"),
        ("RECONCILE_SCHEDULE", "rate(0 minutes)"),
        ("KOMMO_RECONCILE_REQUESTS_PER_SECOND", "0"),
        ("RECONCILE_MAX_PAGES", "0"),
    ],
)
def test_a_bad_reconciliation_setting_is_named_in_the_error(name, value):
    with pytest.raises(ConfigError, match=name):
        settings_from({"TABLE_NAME": "t", name: value}).require("reconcile")
