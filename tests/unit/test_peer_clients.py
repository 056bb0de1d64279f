"""The Whereby and Kommo clients against their simulators over real HTTP: wire format, retries, typed errors."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta

import pytest
import requests

from bridge.core.errors import NotFound, PeerUnavailable, Rejected, Throttled, Unauthorized
from bridge.core.retry import RetryPolicy
from bridge.kommo.client import KommoClient, RequestSpacer
from bridge.whereby.client import ROOM_KEY_PATTERN, RoomRequest, WherebyClient, room_prefix, slug
from tests.conftest import SECRET

FAST = RetryPolicy(attempts=3, connect_timeout=1, read_timeout=0.5, backoff=0.01, max_wait=2.0)
IN_AN_HOUR = datetime.now(UTC) + timedelta(hours=1)


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def whereby(whereby_sim, sleeps) -> WherebyClient:
    return WherebyClient(whereby_sim.base_url, SECRET["whereby_api_key"], FAST, sleep=sleeps)


@pytest.fixture
def kommo(kommo_sim, sleeps) -> KommoClient:
    return KommoClient(kommo_sim.base_url, SECRET["kommo_access_token"], 1000, FAST, sleep=sleeps)


def test_create_sends_the_documented_body_and_reads_the_201(whereby, whereby_sim):
    meeting = whereby.create_meeting(RoomRequest(IN_AN_HOUR, prefix="demo-zabcdefghij-", locked=True))
    [request] = whereby_sim.requests_seen()
    assert request["headers"]["Authorization"] == f"Bearer {SECRET['whereby_api_key']}"
    assert request["headers"]["Content-Type"] == "application/json"
    body = request["json"]
    assert body["fields"] == ["hostRoomUrl"] and body["isLocked"] is True and body["roomMode"] == "normal"
    assert body["endDate"].endswith("Z") and body["roomNamePrefix"] == "demo-zabcdefghij-"
    assert meeting.host_room_url.startswith(meeting.room_url + "?roomKey=")
    assert meeting.room_key == "zabcdefghij"
    assert abs((meeting.end_date - IN_AN_HOUR).total_seconds()) < 1


def test_a_429_with_retry_after_is_waited_out_and_retried(whereby, whereby_sim, sleeps):
    whereby_sim.fail_next(1, status=429, retry_after=1.5, method="POST")
    whereby.create_meeting(RoomRequest(IN_AN_HOUR, prefix="x-"))
    assert sleeps == [1.5]
    assert len(whereby_sim.meetings()) == 1


def test_a_429_asking_for_longer_than_the_budget_raises_throttled_at_once(whereby, whereby_sim, sleeps):
    whereby_sim.fail_next(1, status=429, retry_after=40, method="POST")
    with pytest.raises(Throttled) as throttled:
        whereby.create_meeting(RoomRequest(IN_AN_HOUR, prefix="x-"))
    assert throttled.value.retry_after == 40
    assert sleeps == []


def test_whereby_ms_left_without_a_retry_after_is_waited_out_in_milliseconds(whereby, whereby_sim, sleeps):
    whereby_sim.fail_next(1, status=429, retry_after=1.5, retry_after_as="body", method="POST")  # msLeft 1500
    whereby.create_meeting(RoomRequest(IN_AN_HOUR, prefix="x-"))
    assert sleeps == [1.5]
    assert len(whereby_sim.meetings()) == 1


def test_whereby_ms_left_beyond_the_wait_budget_hands_the_call_back_with_its_seconds(whereby, whereby_sim, sleeps):
    whereby_sim.fail_next(1, status=429, retry_after=40, retry_after_as="body", method="POST")  # msLeft 40000
    with pytest.raises(Throttled) as throttled:
        whereby.create_meeting(RoomRequest(IN_AN_HOUR, prefix="x-"))
    assert throttled.value.retry_after == 40
    assert sleeps == [] and len(whereby_sim.requests_seen()) == 1


@pytest.mark.parametrize(
    ("data", "seconds"),
    [({"ms_left": 2500}, 2.5), ({"msLeft": 1500, "ms_left": 9000}, 1.5), ({}, None)],
    ids=["snake-case-only", "documented-spelling-first", "neither"],
)
def test_whereby_wait_spelled_ms_left_is_read_too(data, seconds):
    # contracts/whereby.md: a Go client decodes the field as ms_left, so both spellings are tried. The simulator sends
    # only msLeft, so this reads a 429 body directly.
    from bridge.core.peer_http import retry_after_seconds

    throttled = requests.Response()
    throttled.status_code = 429
    throttled.headers["Content-Type"] = "application/json"
    throttled._content = json.dumps(
        {"error": "Rate limit active for throttle key: organization:1", "data": data}
    ).encode()
    assert retry_after_seconds(throttled) == seconds


def test_a_retry_after_given_as_an_http_date_is_waited_out_until_that_time(kommo, kommo_sim, sleeps):
    kommo_sim.fail_next(1, status=429, retry_after=2, retry_after_as="date", method="POST")
    kommo.add_note(7, "hello")
    [wait] = sleeps
    assert 0.9 < wait <= 2.0  # an HTTP date has whole seconds: up to one less than asked
    assert len(kommo_sim.notes(7)) == 1


def test_a_retry_after_date_beyond_the_wait_budget_hands_the_call_back_at_once(kommo, kommo_sim, sleeps):
    kommo_sim.fail_next(1, status=429, retry_after=60, retry_after_as="date", method="POST")
    with pytest.raises(Throttled) as throttled:
        kommo.add_note(7, "hello")
    assert 58 < throttled.value.retry_after <= 60
    assert sleeps == [] and len(kommo_sim.requests_seen()) == 1
    assert kommo_sim.notes(7) == []


def test_5xx_is_retried_with_backoff_then_given_up_as_peer_unavailable(whereby, whereby_sim, sleeps):
    whereby_sim.fail_next(3, status=502)
    with pytest.raises(PeerUnavailable):
        whereby.get_meeting("1")
    assert len(sleeps) == 2 and all(0 < s <= FAST.max_wait for s in sleeps)


def test_a_peer_that_never_answers_times_out(whereby, whereby_sim):
    whereby_sim.fail_next(3, status=0, delay=1.0)  # longer than the 0.5 s read timeout
    with pytest.raises(PeerUnavailable):
        whereby.create_meeting(RoomRequest(IN_AN_HOUR, prefix="x-"))


def test_delete_counts_204_and_404_as_gone(whereby, whereby_sim):
    meeting = whereby.create_meeting(RoomRequest(IN_AN_HOUR, prefix="x-"))
    whereby.delete_meeting(meeting.meeting_id)
    whereby_sim.fail_next(1, status=404, method="DELETE")
    whereby.delete_meeting(meeting.meeting_id)
    assert whereby_sim.meetings() == []
    with pytest.raises(NotFound):
        whereby.get_meeting(meeting.meeting_id)


def test_a_wrong_api_key_is_unauthorized_not_retried(whereby_sim, sleeps):
    client = WherebyClient(whereby_sim.base_url, "not-the-key", FAST, sleep=sleeps)
    with pytest.raises(Unauthorized):
        client.create_meeting(RoomRequest(IN_AN_HOUR, prefix="x-"))
    assert sleeps == []


def test_listing_follows_the_cursor_across_pages(whereby, whereby_sim):
    made = {whereby.create_meeting(RoomRequest(IN_AN_HOUR, prefix="x-")).meeting_id for _ in range(5)}
    first, cursor = whereby.list_page(limit=2)
    assert len(first) == 2 and cursor
    listed = {m.meeting_id for m in whereby.iter_meetings(max_pages=10)}
    assert listed == made


@pytest.mark.parametrize(
    ("label", "expected"),
    [("Demo", "demo"), ("Démo Ünïcode!", "demo-unicode"), ("ПЛАН", ""), ("a" * 60, "a" * 25), ("--x__y--", "x-y")],
)
def test_room_prefixes_follow_whereby_rules(label, expected):
    prefix = room_prefix(label, "zabcdefghij")
    assert prefix == (f"{expected}-zabcdefghij-" if expected else "zabcdefghij-")
    assert len(prefix) <= 38 and slug(prefix, 38) + "-" == prefix
    assert ROOM_KEY_PATTERN.search(prefix + "6b44cf4f-dafc-46a4-b455-e8368c7faf6c").group(1) == "zabcdefghij"


def test_a_note_is_a_json_array_with_the_lead_as_entity(kommo, kommo_sim):
    note_id = kommo.add_note(22890011, "Client link: https://example.whereby.com/x")
    [request] = kommo_sim.requests_seen()
    assert request["path"] == "/api/v4/leads/notes"
    assert request["headers"]["Authorization"] == f"Bearer {SECRET['kommo_access_token']}"
    assert request["json"] == [
        {"entity_id": 22890011, "note_type": "common", "params": {"text": "Client link: https://example.whereby.com/x"}}
    ]
    assert note_id == kommo_sim.notes(22890011)[0]["id"]


def test_the_custom_field_is_written_and_cleared_with_null(kommo, kommo_sim):
    kommo.set_text_field(7, 884411, "98765432")
    kommo.set_text_field(7, 884411, None)
    bodies = [r["json"] for r in kommo_sim.requests_seen()]
    assert bodies == [
        {"custom_fields_values": [{"field_id": 884411, "values": [{"value": "98765432"}]}]},
        {"custom_fields_values": [{"field_id": 884411, "values": None}]},
    ]


def test_kommo_429_html_page_is_retried(kommo, kommo_sim, sleeps):
    kommo_sim.fail_next(2, status=429)  # nginx's HTML page, no Retry-After
    kommo.add_note(7, "hello")
    assert len(sleeps) == 2
    assert len(kommo_sim.notes(7)) == 1


def test_kommo_validation_error_is_rejected_without_retry(kommo, kommo_sim, sleeps):
    kommo_sim.fail_next(1, status=400)
    with pytest.raises(Rejected) as rejected:
        kommo.add_note(7, "hello")
    assert rejected.value.status == 400 and sleeps == []


def test_calls_are_spaced_to_the_configured_rate():
    now = [100.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(round(seconds, 3))
        now[0] += seconds

    spacer = RequestSpacer(4.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        spacer()
    assert waits == [0.25, 0.25, 0.25, 0.25]


def arrival_gaps(sim) -> list[float]:
    arrivals = [request["at"] for request in sim.requests_seen()]
    return [later - earlier for earlier, later in itertools.pairwise(arrivals)]


def test_kommo_receives_the_clients_calls_spaced_at_the_configured_rate(kommo_sim):
    # 5/s: an interval of 200 ms stays far above how late a busy machine may see one call arrive.
    client = KommoClient(kommo_sim.base_url, SECRET["kommo_access_token"], 5, FAST)
    for _ in range(5):
        client.get_lead(7)
    gaps = arrival_gaps(kommo_sim)
    assert len(gaps) == 4
    assert sum(gaps) >= 4 / 5 - 0.05, gaps
    assert min(gaps) >= 0.5 / 5, gaps  # the loopback's jitter aside, no two calls closer than the interval


def test_by_default_the_workers_and_the_reconciliation_together_stay_within_kommos_7_requests_a_second(
    stack, kommo_sim, template
):
    from bridge import runtime

    settings = runtime.settings()  # the template's environment: no rate set, so the defaults
    jobs = template["Resources"]["WorkerFunction"]["Properties"]["Events"]["Jobs"]["Properties"]
    workers = jobs["ScalingConfig"]["MaximumConcurrency"]
    assert workers * settings.kommo_requests_per_second + settings.kommo_reconcile_requests_per_second <= 7
    client = runtime.kommo()  # a worker's client, as the worker builds it
    for _ in range(3):
        client.get_lead(7)
    gaps = arrival_gaps(kommo_sim)
    assert sum(gaps) >= 2 / settings.kommo_requests_per_second - 0.01, gaps


# What an operator reads when a peer fails ---------------------------------------------------------------------
def test_a_peers_refusal_names_the_peer_the_call_and_the_status(kommo, kommo_sim):
    kommo_sim.fail_next(1, status=401)
    with pytest.raises(Unauthorized) as refused:
        kommo.get_lead(7)
    assert str(refused.value).startswith("kommo GET /api/v4/leads/7 answered 401")
    assert refused.value.status == 401  # what the worker's log line and the refusal's handling go by


def test_a_peer_that_cannot_be_reached_is_named_with_the_call_and_the_kind_of_failure(whereby, whereby_sim):
    whereby_sim.fail_next(3, status=0)  # no answer, three times: every try of the policy
    with pytest.raises(PeerUnavailable) as unreachable:
        whereby.create_meeting(RoomRequest(IN_AN_HOUR, prefix="x-"))
    assert str(unreachable.value).startswith("whereby POST /meetings: ")
    assert str(unreachable.value).endswith("Error")  # the kind of failure, e.g. ConnectionError


def test_the_waits_between_tries_of_a_failing_peer_double_with_at_most_half_again_of_jitter(
    whereby, whereby_sim, sleeps
):
    whereby_sim.fail_next(2, status=503, method="POST")
    whereby.create_meeting(RoomRequest(IN_AN_HOUR, prefix="x-"))
    first, second = sleeps  # FAST's backoff is 0.01 s
    assert 0.01 <= first < 0.015 and 0.02 <= second < 0.03
