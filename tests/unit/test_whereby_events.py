"""Whereby's webhook: only signed, fresh events of our rooms are acted on, and each fact reaches the deal once.

The events come from the Whereby simulator over real HTTP (signed, delivered twice and out of order when asked) to
the local gateway in front of the template's routes; AWS is moto.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import boto3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from devstack.gateway import Gateway
from devstack.lambda_events import http_api_event
from tests.conftest import SAMPLES, SECRET
from tests.unit.test_close_and_sweep import open_room
from tests.unit.test_hardening import mattermost
from tests.unit.test_layer_shape import loaded_by
from tests.unit.test_whereby_budget import metric, spend_the_background_points, waiting_jobs

LEAD = 22890011  # the lead open_room moves into Demo
WHEREBY_SAMPLES = SAMPLES / "whereby"
SAMPLE_T = 1767225600  # every sample is signed at this time (contracts/whereby-events.md §5)
SIGNING_SECRET = SECRET["whereby_webhook_secret"]
HELD_AT = 1_767_532_920  # Sun 4 Jan 2026 13:22 UTC
WEATHER_TEAM = "wx4zz8t4ttgmtxqiwfohijayzc"


def samples() -> list[Path]:
    return sorted(WHEREBY_SAMPLES.glob("[0-9][0-9]-*.json"))


def sample_header(body_path: Path) -> str:
    for line in body_path.with_suffix(".headers").read_text().splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() == "whereby-signature":
            return value.strip()
    raise AssertionError(f"no signature in {body_path}")


def answer_at(now: float, body: bytes, header: str | None) -> dict:
    """The events route, its clock set to ``now``, as API Gateway would call it."""
    from bridge import runtime
    from bridge.core.http_api import ApiRequest
    from bridge.whereby import events

    headers = {"content-type": "application/json", **({"whereby-signature": header} if header else {})}
    request = ApiRequest.of(http_api_event("POST", "/whereby/events", headers=headers, body=body))
    answer = events.answer(request, replace(runtime.whereby_events(), clock=lambda: now))
    return {"status": answer["statusCode"], **json.loads(answer["body"])}


def post_event(stack, body: bytes, header: str) -> dict:
    headers = {"content-type": "application/json", "whereby-signature": header}
    answer = stack.request("POST", "/whereby/events", headers=headers, body=body)
    return {"status": answer["statusCode"], **json.loads(answer["body"])}


def envelope(event_type: str, room_name: str, **data: object) -> bytes:
    body = {
        "id": "9" * 64,
        "apiVersion": "1.0",
        "createdAt": "2026-01-01T00:00:00.000Z",
        "type": event_type,
        "data": {"meetingId": "1", "roomName": f"/{room_name}", "subdomain": "example", **data},
    }
    return json.dumps(body, separators=(",", ":")).encode()


def signed(body: bytes, t: int, secret: str = SIGNING_SECRET) -> str:
    from bridge.whereby.events import sign

    return sign(body, secret, t)


def table(stack):
    return boto3.resource("dynamodb", region_name="eu-west-1").Table(stack.stack.refs["MeetingsTable"])


def items(stack, sort_prefix: str) -> list[dict]:
    return [i for i in table(stack).scan()["Items"] if i["sk"].startswith(sort_prefix)]  # inspection only


def counted(out: str, metric: str) -> float:
    """The total of one metric in the EMF records a function printed."""
    records = [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]
    return sum(sum(record.get(metric, [])) for record in records)


def room_name(whereby_sim) -> str:
    return whereby_sim.meetings()[0]["roomName"].lstrip("/")


def counted_for(lines: list[str], name: str, reason: str) -> float:
    """A metric's count on the dashboard's line for one ``reason`` (the EMF records that carry that dimension)."""
    total = 0.0
    for line in lines:
        if line.startswith("{") and '"_aws"' in line:
            record = json.loads(line)
            if record.get("reason") == reason:
                total += sum(record.get(name, []))
    return total


def notes_saying(kommo_sim, words: str, lead: int = LEAD) -> list[str]:
    return [n["params"]["text"] for n in kommo_sim.notes(lead) if words in n["params"]["text"]]


@pytest.fixture
def gateway(stack, whereby_sim):
    """The stack's routes on a real port, where the simulator delivers its signed events."""
    with Gateway(stack, port=0, log=None) as running:
        whereby_sim.configure_webhook(f"{running.url}/whereby/events", SIGNING_SECRET)
        yield running


def a_meeting(whereby_sim, room: str) -> None:
    """A host and a guest meet for 34 minutes (a recorder joins too, and is no person)."""
    host = whereby_sim.join(room, "Ana", "host", at=HELD_AT)
    guest = whereby_sim.join(room, "Client", "visitor", at=HELD_AT + 60)
    recorder = whereby_sim.join(room, "Recorder", "recorder", at=HELD_AT + 70)
    whereby_sim.leave(recorder, at=HELD_AT + 1800)
    whereby_sim.leave(guest, at=HELD_AT + 60 + 34 * 60)
    whereby_sim.leave(host, at=HELD_AT + 60 + 34 * 60 + 30)


# The signature --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("body_path", samples(), ids=lambda p: p.stem)
def test_each_signed_sample_passes_the_check_byte_for_byte(stack, body_path):
    from bridge.whereby.events import verify_signature

    raw = body_path.read_bytes()
    verify_signature(raw, sample_header(body_path), [SIGNING_SECRET], now=SAMPLE_T)
    # Through the route: accepted, then ignored, since the samples' rooms are not this stack's.
    assert answer_at(SAMPLE_T + 5, raw, sample_header(body_path)) == {"status": 200, "ignored": "other-room"}
    assert stack.queue_depth("JobsQueue") == 0


@pytest.mark.parametrize(
    ("now", "secret", "tamper", "reason", "kind"),
    [
        (SAMPLE_T, "whsec_other", None, "signature does not match", "signature"),
        (SAMPLE_T, SIGNING_SECRET, b"Client", "signature does not match", "signature"),
        (SAMPLE_T + 301, SIGNING_SECRET, None, "signature timestamp outside the 300 s window", "stale"),
        (SAMPLE_T - 301, SIGNING_SECRET, None, "signature timestamp outside the 300 s window", "stale"),
    ],
    ids=["wrong-secret", "altered-body", "301-s-old", "301-s-ahead"],
)
def test_a_bad_signature_or_a_time_outside_the_window_gets_401_and_nothing_is_enqueued(
    stack, whereby_sim, now, secret, tamper, reason, kind, log_lines
):
    open_room(stack)
    body = envelope("room.client.joined", room_name(whereby_sim), displayName="Ana", roleName="host")
    header = signed(body, SAMPLE_T, secret)
    if tamper:
        body = body.replace(b"Ana", tamper)
    assert answer_at(now, body, header) == {"status": 401, "error": reason}
    assert stack.queue_depth("JobsQueue") == 0
    lines = log_lines()
    assert not any(SIGNING_SECRET in line for line in lines)
    # The dashboard's WherebyEventsRejected graph draws a line for each reason.
    assert counted_for(lines, "WherebyEventsRejected", kind) == 1
    assert sum(counted_for(lines, "WherebyEventsRejected", other) for other in ("signature", "stale")) == 1
    # The same delivery, signed right and on time (the window's edge included), is taken.
    good = signed(body, SAMPLE_T)
    assert answer_at(SAMPLE_T + 300, body, good) == {"status": 200, "accepted": "room.client.joined"}
    assert stack.queue_depth("JobsQueue") == 1


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing Whereby-Signature header"),
        ("v1=abc", "malformed Whereby-Signature header"),
        (f"t={SAMPLE_T}", "malformed Whereby-Signature header"),
        ("t=soon,v1=abc", "malformed Whereby-Signature header"),
    ],
)
def test_a_missing_or_malformed_signature_header_gets_401(stack, header, reason):
    body = (WHEREBY_SAMPLES / "02-room.session.started.json").read_bytes()
    assert answer_at(SAMPLE_T, body, header) == {"status": 401, "error": reason}


def test_one_of_several_v1_signatures_is_enough(stack):
    body_path = WHEREBY_SAMPLES / "03-room.session.ended.json"
    header = sample_header(body_path).replace("t=1767225600,", "t=1767225600,v1=" + "0" * 64 + ",")
    assert answer_at(SAMPLE_T, body_path.read_bytes(), header)["status"] == 200


@given(
    body=st.binary(min_size=1, max_size=300),
    index=st.integers(min_value=0),
    flip=st.integers(min_value=1, max_value=255),
    shift=st.integers(min_value=-300, max_value=300).filter(bool),
)
def test_any_change_to_the_body_or_the_signed_time_breaks_the_signature(body, index, flip, shift):
    from bridge.whereby.events import EventRefused, sign, verify_signature

    header = sign(body, SIGNING_SECRET, SAMPLE_T)
    verify_signature(body, header, [SIGNING_SECRET], now=SAMPLE_T)
    changed = bytearray(body)
    changed[index % len(body)] ^= flip
    with pytest.raises(EventRefused, match="does not match"):
        verify_signature(bytes(changed), header, [SIGNING_SECRET], now=SAMPLE_T)
    # A replayed body with another t (still inside the window) is no longer signed.
    moved = header.replace(f"t={SAMPLE_T}", f"t={SAMPLE_T + shift}")
    with pytest.raises(EventRefused, match="does not match"):
        verify_signature(body, moved, [SIGNING_SECRET], now=SAMPLE_T)


def test_during_a_rotation_old_and_new_secrets_both_pass_and_after_it_the_old_one_is_refused(stack, whereby_sim):
    open_room(stack)
    secrets = boto3.client("secretsmanager", region_name="eu-west-1")
    secret_id = stack.stack.refs["WherebyWebhookSecret"]
    body = envelope("room.client.joined", room_name(whereby_sim), displayName="Ana", roleName="host")

    secrets.put_secret_value(SecretId=secret_id, SecretString=json.dumps({"whereby_webhook_secret": ["new", "old"]}))
    assert post_event(stack, body, signed(body, int(time.time()), "old"))["status"] == 200
    assert post_event(stack, body, signed(body, int(time.time()), "new"))["status"] == 200

    secrets.put_secret_value(SecretId=secret_id, SecretString=json.dumps({"whereby_webhook_secret": "new"}))
    assert post_event(stack, body, signed(body, int(time.time()), "old")) == {
        "status": 401,
        "error": "signature does not match",
    }
    assert post_event(stack, body, signed(body, int(time.time()), "new"))["status"] == 200


def test_an_empty_signing_secret_answers_503_so_whereby_delivers_again(stack):
    secrets = boto3.client("secretsmanager", region_name="eu-west-1")
    secrets.put_secret_value(
        SecretId=stack.stack.refs["WherebyWebhookSecret"], SecretString='{"whereby_webhook_secret": ""}'
    )
    body = (WHEREBY_SAMPLES / "02-room.session.started.json").read_bytes()
    answer = answer_at(SAMPLE_T, body, sample_header(WHEREBY_SAMPLES / "02-room.session.started.json"))
    assert answer == {"status": 503, "error": "temporarily unavailable, retry later"}


# What the route takes --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"not json", "body is not JSON"),
        (b"[]", "body is not a JSON object"),
        (b'{"type":"room.session.ended","data":{}}', "event has no id"),
        (b'{"id":"1","type":"","data":{}}', "event has no type"),
        (b'{"id":"1","type":"room.session.ended"}', "event has no data object"),
    ],
)
def test_a_signed_body_that_is_no_event_gets_400(stack, body, error):
    assert answer_at(SAMPLE_T, body, signed(body, SAMPLE_T)) == {"status": 400, "error": error}
    assert stack.queue_depth("JobsQueue") == 0


def test_an_event_of_a_foreign_room_gets_200_and_nothing_is_stored(stack, whereby_sim, log_lines):
    open_room(stack)  # a room of ours exists: the sample's room is another stack's all the same
    body_path = WHEREBY_SAMPLES / "03-room.session.ended.json"
    before = table(stack).scan()["Items"]
    assert answer_at(SAMPLE_T, body_path.read_bytes(), sample_header(body_path)) == {
        "status": 200,
        "ignored": "other-room",
    }
    assert stack.queue_depth("JobsQueue") == 0
    assert table(stack).scan()["Items"] == before
    assert metric(log_lines(), "WherebyEventsIgnored") == 1


def test_a_recording_event_that_names_its_room_only_by_its_filename_is_taken(stack, whereby_sim):
    # Whereby's older recording payloads carry no roomName (contracts/whereby-events.md): the filename is
    # the room name, a dash and the recording's start time.
    open_room(stack)
    data = {
        "recordingId": "a56f6ad7-37fe-4a37-9319-3174630ba57a",
        "filename": f"{room_name(whereby_sim)}-2026-01-01T00:00:00Z.mp4",
    }
    body = json.dumps(
        {"id": "8" * 64, "createdAt": "2026-01-01T00:05:00.000Z", "type": "recording.finished", "data": data}
    ).encode()
    assert answer_at(SAMPLE_T, body, signed(body, SAMPLE_T)) == {"status": 200, "accepted": "recording.finished"}
    assert stack.queue_depth("JobsQueue") == 1


@pytest.mark.parametrize(
    ("written", "name"),
    [
        ("/demo-zabcdefghij", "demo-zabcdefghij"),
        ("demo-zabcdefghij", "demo-zabcdefghij"),
        ("https://example.whereby.com/demo-zabcdefghij", "demo-zabcdefghij"),
        ("https://example.whereby.com/demo-zabcdefghij?roomKey=eyJhbGci/x.y", "demo-zabcdefghij"),
        ("https://example.whereby.com/demo-zabcdefghij/#top", "demo-zabcdefghij"),
        (" HTTPS://EXAMPLE.WHEREBY.COM/SALES-BOX/ ", "sales-box"),
    ],
    ids=["path", "bare", "link", "host-link", "slash-and-fragment", "capitals"],
)
def test_a_room_name_reads_the_same_from_a_path_a_bare_name_or_a_link(written, name):
    from bridge.whereby.events import normalise_room_name

    assert normalise_room_name(written) == name


def test_an_event_type_the_bridge_does_not_act_on_gets_200_and_is_ignored(stack, whereby_sim):
    open_room(stack)
    body = envelope("room.client.knocked", room_name(whereby_sim), displayName="Ana")
    assert answer_at(SAMPLE_T, body, signed(body, SAMPLE_T)) == {"status": 200, "ignored": "type"}
    assert stack.queue_depth("JobsQueue") == 0


def test_the_events_route_loads_no_http_client_and_no_peer():
    loaded = loaded_by("whereby_events")
    assert "bridge.whereby.events" in loaded
    heavy = {"requests", "bridge.whereby.client", "bridge.kommo.client", "bridge.kommo.deal_rooms"}
    heavy |= {"bridge.kommo.meeting_story", "aws_lambda_powertools.utilities.data_classes"}
    assert heavy & loaded == set()


# What the deal and the records get ---------------------------------------------------------------------------------
def test_a_meeting_delivered_twice_and_backwards_gives_one_meeting_held_note(
    stack, whereby_sim, kommo_sim, gateway, capsys
):
    open_room(stack)
    whereby_sim.configure_webhook(f"{gateway.url}/whereby/events", SIGNING_SECRET, deliver_twice=True, hold=True)
    a_meeting(whereby_sim, room_name(whereby_sim))
    assert whereby_sim.flush(reverse=True) == 8  # 3 joins, 3 leaves, started, ended: ended arrives first
    assert {d["status"] for d in whereby_sim.deliveries()} == {200}
    assert len(whereby_sim.deliveries()) == 16
    assert stack.drain().failed == 0

    held = notes_saying(kommo_sim, "Meeting held")
    assert held == [
        "Meeting held Sun 4 Jan, 14:22\u201314:57 (Europe/Madrid, 35 min) · 2 people: Ana (host), Client (guest)\n"
        f"Whereby session {whereby_sim.events()[0]['data']['roomSessionId']}"
    ]
    [session] = items(stack, "SESSION#")
    assert session["people"] == [{"name": "Ana", "role": "host"}, {"name": "Client", "role": "visitor"}]
    assert session["note_posted"] is True

    # A copy arriving after SQS's five-minute deduplication is dropped by the table.
    from bridge import runtime
    from bridge.whereby.events import EventMessage, event_from

    points, kommo_calls = whereby_sim.points_used, len(kommo_sim.requests_seen())
    for event in whereby_sim.events():
        late = EventMessage(event_from(event))
        runtime.job_queue().send_message(late.to_json(), late.group_id, late.dedup_id + "-late")
    assert stack.drain().failed == 0
    assert len(notes_saying(kommo_sim, "Meeting held")) == 1
    # Dropped before anyone is asked: no insights read paid from the points budget again, no call to Kommo.
    assert (whereby_sim.points_used, len(kommo_sim.requests_seen())) == (points, kommo_calls)
    assert counted(capsys.readouterr().out, "SessionsRecorded") == 1  # the dashboard's "meetings held"


def test_a_meeting_held_note_whose_answer_and_lookup_both_failed_is_found_on_the_jobs_retry(
    stack, whereby_sim, kommo_sim, gateway
):
    open_room(stack)
    kommo_sim.fail_next(1, status=0, method="POST", lost_answer=True)  # the note is made, the answer lost
    # The lookup right after the lost answer fails too (the account, read for the room's note, is kept).
    kommo_sim.fail_next(3, status=503, method="GET")
    a_meeting(whereby_sim, room_name(whereby_sim))
    result = stack.drain()  # the retry looks for the note before it posts
    assert result.failed >= 1 and stack.queue_depth("JobsDeadLetterQueue") == 0
    assert len(notes_saying(kommo_sim, "Meeting held")) == 1


def test_a_session_end_that_whereby_insights_have_not_closed_yet_is_told_ending_at_the_events_time(
    stack, whereby_sim, kommo_sim, gateway
):
    open_room(stack)
    name = room_name(whereby_sim)
    whereby_sim.join(name, "Ana", "host", at=HELD_AT)
    whereby_sim.join(name, "Client", "visitor", at=HELD_AT + 60)
    [started] = [e for e in whereby_sim.events() if e["type"] == "room.session.started"]
    # Whereby says the session ended, but its insights still show it running with both people in it.
    whereby_sim.emit("room.session.ended", started["data"], at=HELD_AT + 35 * 60)
    assert stack.drain().failed == 0

    assert notes_saying(kommo_sim, "Meeting held") == [
        "Meeting held Sun 4 Jan, 14:22\u201314:57 (Europe/Madrid, 35 min) · 2 people: Ana (host), Client (guest)\n"
        f"Whereby session {started['data']['roomSessionId']}"
    ]


def test_a_chat_rooms_session_is_recorded_without_a_note(stack, whereby_sim, kommo_sim, gateway):
    token = SECRET["mattermost_tokens"][WEATHER_TEAM][0]
    assert mattermost(stack, token, WEATHER_TEAM, "Standup 30m")["statusCode"] == 200
    a_meeting(whereby_sim, room_name(whereby_sim))
    assert stack.drain().failed == 0
    [session] = items(stack, "SESSION#")
    assert session["started_at"] == HELD_AT and session["ended_at"] == HELD_AT + 60 + 34 * 60
    assert [p["name"] for p in session["people"]] == ["Ana", "Client"]
    assert session["participant_minutes"] == 70  # Ana 35 and Client 34, rounded
    assert not any(r["path"].endswith("/notes") for r in kommo_sim.requests_seen())


def shown_in_zone(moment: datetime) -> str:
    """How a note writes a time: ``Sun 4 Jan, 14:22`` (English day and month names, whatever the locale)."""
    days, months = (
        ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"],
    )
    return f"{days[moment.weekday()]} {moment.day} {months[moment.month - 1]}, {moment:%H:%M}"


def sweep_at(seconds_later: float) -> dict:
    """The scheduled sweep, its clock moved on, with the hand-over of expired rooms it uses in production."""
    from bridge import runtime
    from bridge.whereby.sweeper import scheduled_run

    clock = lambda: time.time() + seconds_later  # noqa: E731
    return scheduled_run(
        runtime.store(), runtime.whereby, runtime.settings(), clock=clock, expired=runtime.room_expired()
    )


def test_a_deal_room_whose_time_passed_with_nobody_in_it_gets_one_no_show_note(stack, whereby_sim, kommo_sim, capsys):
    open_room(stack)
    name = room_name(whereby_sim)
    assert sweep_at(2 * 3600)["deleted"] == 1
    assert stack.drain().failed == 0
    [note] = notes_saying(kommo_sim, "No one joined")
    # The room's whole window (the deal gave no meeting time), in the account's zone and naming it.
    room_item = items(stack, "ROOM")[0]
    zone = ZoneInfo(kommo_sim.timezone)
    start, end = (datetime.fromtimestamp(int(room_item[k]), zone) for k in ("created_at", "end_at"))
    until = f"{end:%H:%M}" if start.date() == end.date() else shown_in_zone(end)
    assert note == (
        f"No one joined the meeting planned for {shown_in_zone(start)}\u2013{until} ({kommo_sim.timezone}).\n"
        f"No one joined the meeting in room {name}"
    )
    # The sweep's word again (a retried run): still one note.
    from bridge import runtime
    from bridge.store.meetings import Room
    from bridge.whereby.events import expired_room_message

    room = runtime.store().get_room(items(stack, "ROOM")[0]["room_key"])
    assert isinstance(room, Room)
    again = expired_room_message(room, time.time())
    assert again is not None
    runtime.job_queue().send_message(again.to_json(), again.group_id, again.dedup_id + "-again")
    assert stack.drain().failed == 0
    assert len(notes_saying(kommo_sim, "No one joined")) == 1
    assert counted(capsys.readouterr().out, "NoShows") == 1  # the dashboard's "no one joined"


def test_a_room_someone_joined_gets_no_no_show_note(stack, whereby_sim, kommo_sim, gateway):
    open_room(stack)
    host = whereby_sim.join(room_name(whereby_sim), "Ana", "host")  # alone: no session ever starts
    whereby_sim.leave(host)
    assert stack.drain().failed == 0
    sweep_at(2 * 3600)
    assert stack.drain().failed == 0
    assert notes_saying(kommo_sim, "No one joined") == []


def test_a_meeting_whose_events_were_lost_is_told_as_held_at_expiry_not_as_a_no_show(stack, whereby_sim, kommo_sim):
    open_room(stack)
    a_meeting(whereby_sim, room_name(whereby_sim))  # no webhook configured: Whereby's events never came
    sweep_at(2 * 3600)
    assert stack.drain().failed == 0
    assert notes_saying(kommo_sim, "No one joined") == []
    assert len(notes_saying(kommo_sim, "Meeting held")) == 1


def test_a_held_meeting_costs_two_points_from_the_shared_budget(stack, whereby_sim, kommo_sim, gateway, log_lines):
    open_room(stack)
    log_lines()
    before = whereby_sim.points_used
    a_meeting(whereby_sim, room_name(whereby_sim))
    assert stack.drain().failed == 0
    assert whereby_sim.points_used - before == 2  # room-sessions and participants: one read each
    assert metric(log_lines(), "WherebyPointsSpent") == 2  # both taken from the shared count first


def test_a_session_end_that_finds_no_points_goes_back_to_the_queue_unharmed(
    stack, whereby_sim, kommo_sim, gateway, monkeypatch, log_lines
):
    from bridge import runtime

    open_room(stack)
    monkeypatch.setenv("WHEREBY_POINTS_PER_MINUTE", "12")  # a minute's background points: 9
    monkeypatch.setenv("WHEREBY_CHAT_RESERVE_POINTS", "3")
    runtime.reset()
    spend_the_background_points()
    a_meeting(whereby_sim, room_name(whereby_sim))
    drained = stack.drain(max_rounds=1, timeout=1.5)
    lines = log_lines()
    assert drained.failed == 0
    assert metric(lines, "JobsDeferred") == 1 and metric(lines, "JobsFailed") == 0
    assert notes_saying(kommo_sim, "Meeting held") == []
    assert stack.queue_depth("JobsQueue") == 1 and stack.queue_depth("JobsDeadLetterQueue") == 0
    # Handed back as its next generation: a new deduplication id, so SQS does not drop it as a copy of itself.
    (waiting,) = waiting_jobs(stack)
    assert waiting["generation"] == 1 and waiting["whereby_event"]["type"] == "room.session.ended"


# The notes' text: what the deal's owner reads --------------------------------------------------------------------
def _session(started: datetime, minutes: int, *people: tuple[str, str]):
    from bridge.store.meetings import Person, SessionRecord

    begin = int(started.timestamp())
    return SessionRecord(
        room_key="zabcdefghij",
        room_session_id="b3d5f1e0-8f9a-4c2b-9d1e-7a6b5c4d3e2f",
        started_at=begin,
        ended_at=begin + minutes * 60,
        people=tuple(Person(name, role) for name, role in people),
    )


def test_a_meeting_with_one_person_says_one_person_and_a_person_with_no_role_is_a_guest():
    from bridge.kommo.meeting_story import held_note

    record = _session(datetime(2026, 12, 3, 13, 2, tzinfo=UTC), 34, ("Client", ""))
    madrid = ZoneInfo("Europe/Madrid")
    assert held_note(record, madrid, "Europe/Madrid") == (
        "Meeting held Thu 3 Dec, 14:02\u201314:36 (Europe/Madrid, 34 min) · 1 person: Client (guest)\n"
        f"Whereby session {record.room_session_id}"
    )


def test_an_evening_meeting_west_of_utc_is_told_on_its_own_day_though_utc_has_moved_to_the_next():
    from bridge.kommo.meeting_story import held_note

    # 01:00-02:00 UTC on 4 Dec is 20:00-21:00 on 3 Dec in New York: one day, one date.
    record = _session(datetime(2026, 12, 4, 1, 0, tzinfo=UTC), 60, ("Ana", "host"), ("Bo", "visitor"))
    note = held_note(record, ZoneInfo("America/New_York"), "America/New_York")
    assert note.startswith("Meeting held Thu 3 Dec, 20:00\u201321:00 (America/New_York, 60 min) · 2 people: ")


def test_a_no_show_note_names_the_booked_meeting_time_in_the_account_zone():
    from bridge.kommo.meeting_story import noshow_note
    from bridge.store.meetings import Room

    booked = int(datetime(2026, 12, 4, 13, 0, tzinfo=UTC).timestamp())
    room = Room(
        room_key="zabcdefghij",
        source="kommo",
        owner="LEAD#16503244#901",
        created_at=booked - 2 * 86400,
        end_at=booked + 75 * 60,
        meeting_at=booked,
        room_name="/demo-zabcdefghij",
    )
    assert noshow_note(room, ZoneInfo("Europe/Madrid"), "Europe/Madrid") == (
        "No one joined the meeting planned for Fri 4 Dec, 14:00 (Europe/Madrid).\n"
        "No one joined the meeting in room demo-zabcdefghij"
    )
