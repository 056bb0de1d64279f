"""The Whereby and Kommo simulators themselves, driven over real HTTP with `requests`."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import pytest
import requests

from devstack.kommo_sim import KommoSimulator
from devstack.whereby_sim import WherebySimulator

API_KEY = "whereby-test-key"
TOKEN = "kommo-test-token"
WHEREBY_AUTH = {"Authorization": f"Bearer {API_KEY}"}
KOMMO_AUTH = {"Authorization": f"Bearer {TOKEN}"}
TIMEOUT = 5


def in_hours(hours: float) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture
def whereby() -> Iterator[WherebySimulator]:
    with WherebySimulator(API_KEY) as sim:
        yield sim


@pytest.fixture
def kommo() -> Iterator[KommoSimulator]:
    with KommoSimulator(TOKEN, rate_limit_per_second=1000) as sim:
        yield sim


def create(sim: WherebySimulator, **body) -> requests.Response:
    payload = {"endDate": in_hours(1), **body}
    return requests.post(f"{sim.base_url}/meetings", json=payload, headers=WHEREBY_AUTH, timeout=TIMEOUT)


def wget(sim: WherebySimulator, path: str, **params) -> requests.Response:
    return requests.get(f"{sim.base_url}{path}", params=params, headers=WHEREBY_AUTH, timeout=TIMEOUT)


def post_notes(sim: KommoSimulator, body, path: str = "/api/v4/leads/notes") -> requests.Response:
    return requests.post(f"{sim.base_url}{path}", json=body, headers=KOMMO_AUTH, timeout=TIMEOUT)


# ----- Whereby: create -----


def test_create_returns_201_meeting_and_host_url_only_when_requested(whereby: WherebySimulator) -> None:
    plain = create(whereby, roomNamePrefix="kommo-42-")
    with_host = create(whereby, roomNamePrefix="kommo-42-", fields=["hostRoomUrl"])

    assert plain.status_code == 201
    body = plain.json()
    assert set(body) == {"meetingId", "roomName", "roomUrl", "startDate", "endDate"}
    assert isinstance(body["meetingId"], str)
    assert re.fullmatch(r"/kommo-42-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", body["roomName"])
    assert body["roomUrl"] == f"https://example.whereby.com{body['roomName']}"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["startDate"])
    host = with_host.json()
    assert host["hostRoomUrl"].startswith(f"{host['roomUrl']}?roomKey=")
    assert "viewerRoomUrl" not in host
    assert whereby.meetings()[1] == host
    assert "hostRoomUrl" in whereby.meetings()[0]


def test_create_normalises_prefix_and_end_date_to_utc(whereby: WherebySimulator) -> None:
    response = create(whereby, roomNamePrefix="Customer 0348-", endDate="2099-05-07T17:42:49-05:00")

    assert response.status_code == 201
    assert response.json()["roomName"].startswith("/customer0348-")
    assert response.json()["endDate"] == "2099-05-07T22:42:49.000Z"


def test_create_human_short_pattern_and_viewer_url(whereby: WherebySimulator) -> None:
    body = create(whereby, roomNamePattern="human-short", fields=["viewerRoomUrl"]).json()

    assert re.fullmatch(r"/[a-z0-9]{6}", body["roomName"])
    assert body["viewerRoomUrl"].startswith(f"{body['roomUrl']}?roomKey=")
    assert "hostRoomUrl" not in body


def test_end_date_within_clock_skew_is_accepted(whereby: WherebySimulator) -> None:
    just_past = (datetime.now(UTC) - timedelta(seconds=30)).isoformat()

    assert create(whereby, endDate=just_past).status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        {"endDate": None},
        {"endDate": "tomorrow"},
        {"endDate": "2099-02-30T10:00:00Z"},
        {"endDate": "2020-01-01T00:00:00.000Z"},
        {"roomNamePrefix": "a" * 40},
        {"roomNamePrefix": "kommo_42"},
        {"roomNamePrefix": "/kommo"},
        {"roomMode": "large"},
        {"roomNamePattern": "short"},
        {"isLocked": "true"},
        {"fields": ["hostRoomUrl", "hostUrl"]},
        {"fields": "hostRoomUrl"},
        {"templateType": "other"},
        {"recording": {"type": "cloud"}},
        {"roomName": "kommo"},
    ],
)
def test_create_rejects_invalid_bodies_with_400(whereby: WherebySimulator, body: dict) -> None:
    response = create(whereby, **body)

    assert response.status_code == 400
    assert isinstance(response.json()["error"], str)
    assert whereby.meetings() == []


def test_create_requires_end_date(whereby: WherebySimulator) -> None:
    response = requests.post(f"{whereby.base_url}/meetings", json={}, headers=WHEREBY_AUTH, timeout=TIMEOUT)

    assert response.status_code == 400
    assert "endDate" in response.json()["error"]


def test_create_rejects_non_json_bodies(whereby: WherebySimulator) -> None:
    url = f"{whereby.base_url}/meetings"
    form = requests.post(url, data={"endDate": in_hours(1)}, headers=WHEREBY_AUTH, timeout=TIMEOUT)
    broken = requests.post(
        url, data=b"{", headers={**WHEREBY_AUTH, "Content-Type": "application/json"}, timeout=TIMEOUT
    )

    assert form.status_code == 415
    assert broken.status_code == 400
    assert "error" in form.json()
    assert "error" in broken.json()


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}])
def test_requests_without_the_api_key_get_401(whereby: WherebySimulator, headers: dict) -> None:
    response = requests.post(
        f"{whereby.base_url}/meetings", json={"endDate": in_hours(1)}, headers=headers, timeout=TIMEOUT
    )

    assert response.status_code == 401
    assert "error" in response.json()
    assert whereby.meetings() == []
    assert whereby.requests_seen()[-1]["status"] == 401


# ----- Whereby: get, delete, list -----


def test_get_and_idempotent_delete(whereby: WherebySimulator) -> None:
    meeting_id = create(whereby).json()["meetingId"]
    url = f"{whereby.base_url}/meetings/{meeting_id}"

    got = wget(whereby, f"/meetings/{meeting_id}", fields="hostRoomUrl,viewerRoomUrl")
    first = requests.delete(url, headers=WHEREBY_AUTH, timeout=TIMEOUT)
    second = requests.delete(url, headers=WHEREBY_AUTH, timeout=TIMEOUT)
    unknown = requests.delete(f"{whereby.base_url}/meetings/nope", headers=WHEREBY_AUTH, timeout=TIMEOUT)

    assert got.status_code == 200
    assert {"hostRoomUrl", "viewerRoomUrl"} <= set(got.json())
    assert [first.status_code, second.status_code, unknown.status_code] == [204, 204, 204]
    assert first.content == b""
    assert wget(whereby, f"/meetings/{meeting_id}").status_code == 404
    assert whereby.meetings() == []


def test_unknown_paths_and_query_params_are_rejected(whereby: WherebySimulator) -> None:
    assert wget(whereby, "/rooms").status_code == 404
    assert wget(whereby, "/meetings/999").status_code == 404
    assert wget(whereby, "/meetings", field="hostRoomUrl").status_code == 400
    assert wget(whereby, "/meetings", fields=["hostRoomUrl", "viewerRoomUrl"]).status_code == 400
    assert wget(whereby, "/meetings", fields="roomKey").status_code == 400


def test_list_pages_with_cursor_in_creation_order(whereby: WherebySimulator) -> None:
    created = [create(whereby).json()["meetingId"] for _ in range(5)]

    pages, cursor = [], None
    while True:
        params = {"limit": 2, "fields": "hostRoomUrl", **({"cursor": cursor} if cursor else {})}
        response = wget(whereby, "/meetings", **params)
        assert response.status_code == 200
        pages.append([meeting["meetingId"] for meeting in response.json()["results"]])
        assert all("hostRoomUrl" in meeting for meeting in response.json()["results"])
        cursor = response.json()["cursor"]
        if cursor is None:
            break

    assert pages == [created[0:2], created[2:4], created[4:5]]
    assert len(wget(whereby, "/meetings").json()["results"]) == 5


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"limit": "ten"}, {"cursor": "bogus"}])
def test_list_rejects_bad_limit_and_unknown_cursor(whereby: WherebySimulator, params: dict) -> None:
    assert wget(whereby, "/meetings", **params).status_code == 400


def test_points_used_counts_reads_deletes_and_writes(whereby: WherebySimulator) -> None:
    meeting_id = create(whereby).json()["meetingId"]
    wget(whereby, f"/meetings/{meeting_id}")
    requests.delete(f"{whereby.base_url}/meetings/{meeting_id}", headers=WHEREBY_AUTH, timeout=TIMEOUT)

    assert whereby.points_used == 3 + 1 + 2


def test_a_spent_points_budget_answers_429_as_whereby_documents_and_refills_after_its_window() -> None:
    with WherebySimulator(API_KEY, points_per_minute=7, time_scale=30) as whereby:  # 7 points every 2 s
        assert [create(whereby).status_code for _ in range(2)] == [201, 201]
        assert wget(whereby, "/meetings").status_code == 200  # 3 + 3 + 1: the budget is spent exactly
        refused = create(whereby)
        assert refused.status_code == 429
        assert refused.json()["error"] == "Rate limit active for throttle key: organization:1"
        assert 0 < refused.json()["data"]["msLeft"] <= 2000
        assert 0 < float(refused.headers["Retry-After"]) <= 2
        assert refused.headers["X-RateLimit-Limit"] == "7"
        assert refused.headers["X-RateLimit-Remaining"] == "0"
        assert refused.headers["X-RateLimit-Reset"].endswith("GMT")
        assert whereby.points_used == 7 and whereby.budget_refusals == 1  # a refused call costs nothing
        time.sleep(refused.json()["data"]["msLeft"] / 1000 + 0.05)
        assert create(whereby).status_code == 201


def test_requests_are_logged_with_original_header_case(whereby: WherebySimulator) -> None:
    create(whereby, roomNamePrefix="log-")
    wget(whereby, "/meetings", limit="3")

    post, listing = whereby.requests_seen()
    assert post["method"] == "POST"
    assert post["path"] == "/v1/meetings"
    assert post["headers"]["Authorization"] == f"Bearer {API_KEY}"
    assert post["json"]["roomNamePrefix"] == "log-"
    assert post["status"] == 201
    assert listing["query"] == {"limit": "3"}
    assert listing["json"] is None


# ----- Whereby: fault injection -----


def test_fail_next_429_sends_retry_after_and_ms_left(whereby: WherebySimulator) -> None:
    whereby.fail_next(status=429, retry_after=2)

    throttled = create(whereby)
    after = create(whereby)

    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "2"
    assert throttled.json()["data"]["msLeft"] == 2000
    assert isinstance(throttled.json()["error"], str)
    assert after.status_code == 201
    assert len(whereby.meetings()) == 1


def test_fail_next_429_tells_its_wait_as_an_http_date_or_only_in_ms_left(whereby: WherebySimulator) -> None:
    whereby.fail_next(status=429, retry_after=30, retry_after_as="date")
    whereby.fail_next(status=429, retry_after=2, retry_after_as="body")

    dated = create(whereby)
    in_body = create(whereby)

    assert dated.status_code == in_body.status_code == 429
    until = parsedate_to_datetime(dated.headers["Retry-After"]).timestamp()
    assert 28 < until - time.time() <= 30
    assert "Retry-After" not in in_body.headers and in_body.json()["data"]["msLeft"] == 2000
    with pytest.raises(ValueError, match="retry_after_as"):
        whereby.fail_next(status=429, retry_after=2, retry_after_as="minutes")


def test_fail_next_matches_method_and_count(whereby: WherebySimulator) -> None:
    whereby.fail_next(2, status=503, method="DELETE")

    created = create(whereby)
    url = f"{whereby.base_url}/meetings/{created.json()['meetingId']}"
    statuses = [requests.delete(url, headers=WHEREBY_AUTH, timeout=TIMEOUT).status_code for _ in range(3)]

    assert created.status_code == 201
    assert statuses == [503, 503, 204]


def test_status_zero_times_out_or_drops_the_connection(whereby: WherebySimulator) -> None:
    whereby.fail_next(status=0, delay=1.0)
    with pytest.raises(requests.Timeout):
        requests.get(f"{whereby.base_url}/meetings", headers=WHEREBY_AUTH, timeout=0.2)

    whereby.fail_next(status=0)
    with pytest.raises(requests.ConnectionError):
        wget(whereby, "/meetings")

    assert [entry["status"] for entry in whereby.requests_seen()] == [0, 0]
    assert wget(whereby, "/meetings").status_code == 200


def test_latency_is_added_to_every_request(whereby: WherebySimulator) -> None:
    whereby.latency = 0.2
    started = time.monotonic()
    response = wget(whereby, "/meetings")

    assert response.status_code == 200
    assert time.monotonic() - started >= 0.2


def test_stop_closes_pooled_keep_alive_connections() -> None:
    session = requests.Session()
    sim = WherebySimulator(API_KEY).start()
    url = f"{sim.base_url}/meetings"
    assert session.get(url, headers=WHEREBY_AUTH, timeout=TIMEOUT).status_code == 200

    sim.stop()

    with pytest.raises(requests.ConnectionError):
        session.get(url, headers=WHEREBY_AUTH, timeout=TIMEOUT)
    session.close()


def _fault_statuses(seed: int) -> list[int]:
    with WherebySimulator(API_KEY) as sim:
        sim.set_fault_rate(0.5, seed=seed, kinds=("500", "429"))
        return [wget(sim, "/meetings").status_code for _ in range(20)]


def test_fault_rate_is_reproducible_with_a_seed() -> None:
    first, again, other = _fault_statuses(7), _fault_statuses(7), _fault_statuses(8)

    assert first == again
    assert first != other
    assert {200, 500, 429} == set(first)


def test_random_429_carries_retry_after(whereby: WherebySimulator) -> None:
    whereby.set_fault_rate(1.0, kinds=("429",))
    response = wget(whereby, "/meetings")

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "0"
    assert response.json()["data"]["msLeft"] == 0


def test_set_fault_rate_rejects_unknown_kinds(whereby: WherebySimulator) -> None:
    with pytest.raises(ValueError):
        whereby.set_fault_rate(0.1, kinds=("boom",))


def test_reset_forgets_meetings_log_and_faults(whereby: WherebySimulator) -> None:
    create(whereby)
    whereby.fail_next(3)
    whereby.reset()

    assert whereby.meetings() == []
    assert whereby.requests_seen() == []
    assert whereby.points_used == 0
    assert wget(whereby, "/meetings").status_code == 200


def test_whereby_control_endpoints(whereby: WherebySimulator) -> None:
    root = whereby.base_url.removesuffix("/v1")
    create(whereby)

    assert len(requests.get(f"{root}/_sim/meetings", timeout=TIMEOUT).json()) == 1
    assert requests.get(f"{root}/_sim/requests", timeout=TIMEOUT).json()[0]["status"] == 201
    fault = {"n": 1, "status": 429, "retry_after": 1, "delay": 0, "method": "GET"}
    assert requests.post(f"{root}/_sim/faults", json=fault, timeout=TIMEOUT).status_code == 204
    assert wget(whereby, "/meetings").status_code == 429
    assert requests.post(f"{root}/_sim/latency", json={"seconds": 0.05}, timeout=TIMEOUT).status_code == 204
    assert whereby.latency == 0.05
    assert requests.post(f"{root}/_sim/reset", timeout=TIMEOUT).status_code == 204
    assert whereby.meetings() == []
    assert requests.post(f"{root}/_sim/faults", json={"status": "x"}, timeout=TIMEOUT).status_code == 400


# ----- Kommo -----


def test_bulk_notes_are_stored_and_acknowledged(kommo: KommoSimulator) -> None:
    body = [
        {"entity_id": 11, "note_type": "common", "params": {"text": "Guest: https://example.whereby.com/x"}},
        {"entity_id": 12, "note_type": "service_message", "params": {"service": "Whereby", "text": "room"}},
    ]

    response = post_notes(kommo, body)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/hal+json"
    acks = response.json()["_embedded"]["notes"]
    assert [(ack["entity_id"], ack["request_id"]) for ack in acks] == [(11, "0"), (12, "1")]
    assert kommo.notes(11) == [
        {"id": acks[0]["id"], "entity_id": 11, "note_type": "common", "params": body[0]["params"]}
    ]
    assert len(kommo.notes()) == 2


def test_lead_scoped_notes_take_the_entity_from_the_path(kommo: KommoSimulator) -> None:
    response = post_notes(
        kommo, [{"note_type": "common", "params": {"text": "hi"}, "request_id": "a"}], "/api/v4/leads/77/notes"
    )

    assert response.status_code == 200
    assert response.json()["_embedded"]["notes"][0]["request_id"] == "a"
    assert kommo.notes(77)[0]["params"] == {"text": "hi"}


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"entity_id": 1, "note_type": "common", "params": {"text": "x"}}, ""),
        ([], ""),
        ([{"note_type": "common", "params": {"text": "x"}}], "entity_id"),
        ([{"entity_id": "1", "note_type": "common", "params": {"text": "x"}}], "entity_id"),
        ([{"entity_id": 1, "note_type": "call_in", "params": {"text": "x"}}], "note_type"),
        ([{"entity_id": 1, "note_type": "common", "params": {"text": ""}}], "params.text"),
        ([{"entity_id": 1, "note_type": "common"}], "params"),
        ([{"entity_id": 1, "note_type": "service_message", "params": {"text": "x"}}], "params.service"),
    ],
)
def test_invalid_notes_get_400_with_validation_errors(kommo: KommoSimulator, body, path: str) -> None:
    response = post_notes(kommo, body)

    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 400
    assert problem["type"] == "https://httpstatus.es/400"
    assert path in [error["path"] for error in problem["validation-errors"][0]["errors"]]
    assert kommo.notes() == []


def test_kommo_rejects_missing_token_with_problem_json(kommo: KommoSimulator) -> None:
    response = requests.get(f"{kommo.base_url}/api/v4/leads/1", timeout=TIMEOUT)

    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["title"] == "Unauthorized"
    assert response.json()["type"] == "https://httpstatus.es/401"


def test_patch_sets_and_clears_custom_fields(kommo: KommoSimulator) -> None:
    url = f"{kommo.base_url}/api/v4/leads/5"
    set_body = {"name": "ignored", "custom_fields_values": [{"field_id": 884411, "values": [{"value": "98"}]}]}

    patched = requests.patch(url, json=set_body, headers=KOMMO_AUTH, timeout=TIMEOUT)
    lead = requests.get(url, headers=KOMMO_AUTH, timeout=TIMEOUT).json()
    clear_body = {"custom_fields_values": [{"field_id": 884411, "values": None}]}
    cleared = requests.patch(url, json=clear_body, headers=KOMMO_AUTH, timeout=TIMEOUT)

    assert patched.status_code == 200
    assert patched.json()["id"] == 5
    assert isinstance(patched.json()["updated_at"], int)
    assert lead["name"] == "Lead #5"
    assert lead["custom_fields_values"][0]["field_id"] == 884411
    assert lead["custom_fields_values"][0]["values"] == [{"value": "98"}]
    assert {"status_id", "pipeline_id", "updated_at", "_links"} <= set(lead)
    assert cleared.status_code == 200
    assert kommo.lead(5)["custom_fields_values"] is None


@pytest.mark.parametrize(
    "body",
    [
        [{"custom_fields_values": []}],
        {"custom_fields_values": {"field_id": 1}},
        {"custom_fields_values": [{"values": [{"value": "x"}]}]},
        {"custom_fields_values": [{"field_id": 1, "values": "x"}]},
        {"custom_fields_values": [{"field_id": 1}]},
    ],
)
def test_patch_rejects_wrong_shapes(kommo: KommoSimulator, body) -> None:
    response = requests.patch(f"{kommo.base_url}/api/v4/leads/5", json=body, headers=KOMMO_AUTH, timeout=TIMEOUT)

    assert response.status_code == 400
    assert "validation-errors" in response.json()


def test_unknown_lead_is_204_and_added_lead_is_returned(kommo: KommoSimulator) -> None:
    kommo.add_lead(9, name="Demo deal", status_id=142)

    unknown = requests.get(f"{kommo.base_url}/api/v4/leads/8", headers=KOMMO_AUTH, timeout=TIMEOUT)
    known = requests.get(f"{kommo.base_url}/api/v4/leads/9", headers=KOMMO_AUTH, timeout=TIMEOUT)

    assert unknown.status_code == 204
    assert unknown.content == b""
    assert known.json()["name"] == "Demo deal"
    assert known.json()["status_id"] == 142
    assert kommo.lead(9)["name"] == "Demo deal"


def test_rate_limit_answers_429_html_without_retry_after() -> None:
    with KommoSimulator(TOKEN, rate_limit_per_second=3) as sim:
        url = f"{sim.base_url}/api/v4/leads/1"
        statuses = [requests.get(url, headers=KOMMO_AUTH, timeout=TIMEOUT) for _ in range(4)]
        time.sleep(1.05)
        recovered = requests.get(url, headers=KOMMO_AUTH, timeout=TIMEOUT)

    limited = statuses[-1]
    assert [r.status_code for r in statuses] == [204, 204, 204, 429]
    assert limited.headers["Content-Type"].startswith("text/html")
    assert limited.text == "<html><body><h1>429 Too Many Requests</h1></body></html>"
    assert "Retry-After" not in limited.headers
    assert recovered.status_code == 204


@pytest.mark.parametrize(
    ("kind", "status", "content_type"),
    [("500", 500, "application/problem+json"), ("429", 429, "text/html"), ("html", 502, "text/html")],
)
def test_kommo_fault_kinds(kommo: KommoSimulator, kind: str, status: int, content_type: str) -> None:
    kommo.set_fault_rate(1.0, kinds=(kind,))

    response = post_notes(kommo, [{"entity_id": 1, "note_type": "common", "params": {"text": "x"}}])

    assert response.status_code == status
    assert response.headers["Content-Type"].startswith(content_type)
    assert "Retry-After" not in response.headers
    assert kommo.notes() == []


def test_kommo_timeout_fault(kommo: KommoSimulator) -> None:
    kommo.set_fault_rate(1.0, kinds=("timeout",), timeout_delay=1.0)

    with pytest.raises(requests.Timeout):
        requests.get(f"{kommo.base_url}/api/v4/leads/1", headers=KOMMO_AUTH, timeout=0.2)


def test_kommo_control_endpoints(kommo: KommoSimulator) -> None:
    post_notes(kommo, [{"entity_id": 3, "note_type": "common", "params": {"text": "x"}}])
    post_notes(kommo, [{"entity_id": 4, "note_type": "common", "params": {"text": "y"}}])

    notes = requests.get(f"{kommo.base_url}/_sim/notes", params={"lead_id": 4}, timeout=TIMEOUT).json()
    fault = requests.post(f"{kommo.base_url}/_sim/faults", json={"status": 503}, timeout=TIMEOUT)
    failed = requests.get(f"{kommo.base_url}/api/v4/leads/3", headers=KOMMO_AUTH, timeout=TIMEOUT)
    seen = requests.get(f"{kommo.base_url}/_sim/requests", timeout=TIMEOUT).json()
    seeded = requests.post(f"{kommo.base_url}/_sim/leads", json={"id": 50, "name": "Seeded"}, timeout=TIMEOUT)
    seeded_name = kommo.lead(50)["name"]
    reset = requests.post(f"{kommo.base_url}/_sim/reset", timeout=TIMEOUT)

    assert [note["params"]["text"] for note in notes] == ["y"]
    assert fault.status_code == 204
    assert failed.status_code == 503
    assert failed.headers["Content-Type"].startswith("text/html")
    assert [entry["status"] for entry in seen] == [200, 200, 503]
    assert seeded.status_code == 204
    assert seeded_name == "Seeded"
    assert reset.status_code == 204
    assert kommo.notes() == []
    assert kommo.requests_seen() == []


# ----- Kommo: the event log -----


def get_events(sim: KommoSimulator, **params) -> requests.Response:
    return requests.get(f"{sim.base_url}/api/v4/events", params=params, headers=KOMMO_AUTH, timeout=TIMEOUT)


def test_moving_a_lead_logs_a_status_change_with_the_stage_before_and_after(kommo: KommoSimulator) -> None:
    kommo.add_lead(7, status_id=61234501, pipeline_id=5)

    recorded = kommo.move_lead(7, 142, at=1_767_225_000)
    response = get_events(kommo, **{"filter[type]": "lead_status_changed", "filter[entity]": "lead"})

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/hal+json"
    [event] = response.json()["_embedded"]["events"]
    assert isinstance(event["id"], str) and event["id"] == recorded["id"]
    assert (event["type"], event["entity_id"], event["entity_type"]) == ("lead_status_changed", 7, "lead")
    assert event["created_at"] == 1_767_225_000
    assert event["value_before"] == [{"lead_status": {"id": 61234501, "pipeline_id": 5}}]
    assert event["value_after"] == [{"lead_status": {"id": 142, "pipeline_id": 5}}]
    assert event["_links"]["self"]["href"].endswith(f"/api/v4/events/{event['id']}")
    lead = kommo.lead(7)
    assert (lead["status_id"], lead["updated_at"], lead["closed_at"]) == (142, 1_767_225_000, 1_767_225_000)


def test_events_are_filtered_by_type_entity_and_creation_time(kommo: KommoSimulator) -> None:
    moved = kommo.move_lead(1, 61234501, at=100)
    deleted = kommo.delete_lead(2, at=200)
    restored = kommo.restore_lead(2, at=300)
    kommo.record_event("contact_added", 9, entity_type="contact", created_at=200)

    def ids(**params: str) -> list[str]:
        response = get_events(kommo, **params)
        return [] if response.status_code == 204 else [e["id"] for e in response.json()["_embedded"]["events"]]

    assert ids(**{"filter[type]": "lead_deleted,lead_restored"}) == [restored["id"], deleted["id"]]  # newest first
    assert ids(**{"filter[type][]": "lead_status_changed"}) == [moved["id"]]
    assert ids(**{"filter[created_at][from]": "150", "filter[created_at][to]": "250", "filter[entity]": "lead"}) == [
        deleted["id"]
    ]
    assert ids(**{"filter[created_at]": "100"}) == [moved["id"]]
    assert ids(**{"filter[entity]": "lead", "filter[entity_id]": "1"}) == [moved["id"]]
    assert ids(**{"filter[entity]": "task"}) == []


def test_events_come_in_pages_with_a_next_link_until_the_last_and_204_past_it(kommo: KommoSimulator) -> None:
    for at in range(5):
        kommo.move_lead(1, 61234501 + at, at=1000 + at)

    pages = [get_events(kommo, limit="2", page=str(page)) for page in (1, 2, 3, 4)]

    assert [p.status_code for p in pages] == [200, 200, 200, 204]
    bodies = [p.json() for p in pages[:3]]
    assert [b["_page"] for b in bodies] == [1, 2, 3]
    assert [len(b["_embedded"]["events"]) for b in bodies] == [2, 2, 1]
    assert ["next" in b["_links"] for b in bodies] == [True, True, False]
    assert "page=2" in bodies[0]["_links"]["next"]["href"] and "limit=2" in bodies[0]["_links"]["next"]["href"]
    assert "page=1" in bodies[0]["_links"]["self"]["href"]
    assert pages[3].content == b""
    assert get_events(kommo, **{"filter[type]": "lead_deleted"}).status_code == 204


def test_an_events_limit_above_250_is_served_as_250(kommo: KommoSimulator) -> None:
    for at in range(260):
        kommo.record_event("lead_status_changed", 1, created_at=at)

    body = get_events(kommo, limit="1000").json()

    assert len(body["_embedded"]["events"]) == 250 and "next" in body["_links"]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "many"},
        {"page": "0"},
        {"filter[entity]": "leads"},
        {"filter[created_at][from]": "yesterday"},
        {"filter[entity]": "lead,contact", "filter[entity_id]": "1"},
    ],
)
def test_malformed_event_filters_get_400_with_validation_errors(kommo: KommoSimulator, params: dict) -> None:
    response = get_events(kommo, **params)

    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/problem+json"
    assert "validation-errors" in response.json()


def test_the_event_log_needs_the_token_and_honours_the_rate_limit_and_faults() -> None:
    with KommoSimulator(TOKEN, rate_limit_per_second=3) as sim:
        unauthorized = requests.get(f"{sim.base_url}/api/v4/events", timeout=TIMEOUT)
        sim.fail_next(1, status=503, method="GET", after=1)
        statuses = [get_events(sim).status_code for _ in range(4)]

    assert unauthorized.status_code == 401
    # A refused token spends the window too; an injected fault answers before the limiter and does not.
    assert statuses == [204, 503, 204, 429]


def test_control_routes_record_and_list_events(kommo: KommoSimulator) -> None:
    root = f"{kommo.base_url}/_sim/events"
    moved = requests.post(
        root, json={"type": "lead_status_changed", "lead_id": 5, "status_id": 143, "created_at": 10}, timeout=TIMEOUT
    )
    deleted = requests.post(root, json={"type": "lead_deleted", "lead_id": 5}, timeout=TIMEOUT)
    bad = requests.post(root, json={"type": "lead_status_changed", "lead_id": 5}, timeout=TIMEOUT)
    unknown = requests.post(root, json={"type": "lead_added", "lead_id": 5}, timeout=TIMEOUT)
    listed = requests.get(root, timeout=TIMEOUT).json()

    assert moved.status_code == 201 and moved.json()["value_after"][0]["lead_status"]["id"] == 143
    assert deleted.status_code == 201 and kommo.lead(5)["is_deleted"] is True
    assert bad.status_code == 400 and unknown.status_code == 400
    assert [e["type"] for e in listed] == ["lead_status_changed", "lead_deleted"]
    assert requests.post(f"{kommo.base_url}/_sim/reset", timeout=TIMEOUT).status_code == 204
    assert kommo.events() == []


def test_a_fault_can_wait_for_the_requests_before_it(kommo: KommoSimulator) -> None:
    requests.post(f"{kommo.base_url}/_sim/faults", json={"status": 500, "after": 2, "method": "GET"}, timeout=TIMEOUT)
    post_notes(kommo, [{"entity_id": 1, "note_type": "common", "params": {"text": "x"}}])  # not a GET: not counted

    statuses = [get_events(kommo).status_code for _ in range(4)]

    assert statuses == [204, 204, 500, 204]


def test_requests_are_logged_with_their_arrival_time(kommo: KommoSimulator) -> None:
    before = time.monotonic()
    get_events(kommo)
    time.sleep(0.05)
    get_events(kommo)

    first, second = (entry["at"] for entry in kommo.requests_seen())

    assert before <= first and second - first >= 0.05
