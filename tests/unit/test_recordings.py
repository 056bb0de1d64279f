"""Recordings: a deal gets one note with a link that lasts, the link opens a fresh Whereby link, retention deletes.

The events reach ``on_recording_ready`` as the worker hands them over (a parsed ``WherebyEvent``); the Whereby
simulator holds the recordings and answers the access-link and delete calls over HTTP, the table is moto's.
"""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.error
import urllib.request
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.gateway import Gateway
from devstack.template import load_template
from tests.conftest import SAMPLES, SECRET
from tests.kommo_bodies import delete_body, status_body
from tests.unit.test_close_and_sweep import post
from tests.unit.test_hardening import mattermost, open_room, use_setting
from tests.unit.test_layer_shape import loaded_by
from tests.unit.test_whereby_budget import spend_the_background_points

LEAD, OTHER_LEAD, THIRD_LEAD = 30267969, 30267970, 30267971
WEATHER_TEAM = "wx4zz8t4ttgmtxqiwfohijayzc"
DAY = 86400
LINK = re.compile(r"(https?://\S+)/recordings/([A-Za-z0-9_-]+)")
_FILENAME_TIME = re.compile(r"-\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z(\.\w+)?$")


def event_of(body: dict):
    """The event as the worker hands it over: room_name normalised, from the filename when roomName is absent."""
    from bridge.whereby.events import WherebyEvent

    data = body["data"]
    name = data.get("roomName") or _FILENAME_TIME.sub("", data.get("filename", ""))
    return WherebyEvent(
        id=body["id"],
        type=body["type"],
        created_at=body["createdAt"],
        data=data,
        room_name=name.rstrip("/").rsplit("/", 1)[-1].lower(),
    )


def ready(body: dict) -> str:
    from bridge import runtime
    from bridge.kommo.recordings import on_recording_ready

    return on_recording_ready(event_of(body), runtime.recording_ports())


def room_of(whereby_sim, lead_url_part: str | None = None) -> str:
    rooms = whereby_sim.meetings()
    if lead_url_part is not None:
        rooms = [r for r in rooms if lead_url_part in r["roomUrl"]]
    return rooms[-1]["roomName"]


def recording_notes(kommo_sim, lead: int) -> list[str]:
    return [n["params"]["text"] for n in kommo_sim.notes(lead) if "/recordings/" in n["params"]["text"]]


def link_id_in(note: str) -> str:
    found = LINK.search(note)
    assert found, note
    return found.group(2)


def follow(stack, link_id: str) -> dict:
    return stack.request("GET", f"/recordings/{link_id}")


def sweep_at(moment: float):
    from bridge import runtime
    from bridge.whereby.sweeper import sweep

    return sweep(runtime.store(), runtime.whereby(), runtime.settings(), clock=lambda: moment)


def deal_with_recording(stack, whereby_sim, kommo_sim, lead: int, at: int, kind: str = "recording") -> str:
    """A deal in Demo whose meeting was recorded; returns the link id its note carries."""
    open_room(stack, lead=lead, at=at)
    name = whereby_sim.meetings()[-1]["roomName"]
    ready(whereby_sim.finish_recording(name, kind=kind))
    [note] = recording_notes(kommo_sim, lead)
    return link_id_in(note)


# The note and its link ---------------------------------------------------------------------------------------
def test_a_finished_recording_gives_the_deal_one_note_with_a_stable_link_even_when_delivered_twice(
    stack, whereby_sim, kommo_sim
):
    open_room(stack)
    event = whereby_sim.finish_recording(whereby_sim.meetings()[0]["roomName"])
    outcomes = [ready(event), ready(event)]
    assert outcomes == ["noted: the deal has the recording's link", "exists: the deal has its note"]
    [note] = recording_notes(kommo_sim, LEAD)
    base, link_id = LINK.search(note).groups()
    from bridge import runtime

    assert base == runtime.settings().api_base_url  # the stack's own API, not Whereby's short-lived link
    assert len(link_id) == 32  # 24 random bytes: 192 bits
    assert "whereby" not in note.split("\n")[1]


def test_a_note_whose_answer_was_lost_is_not_posted_twice(stack, whereby_sim, kommo_sim):
    open_room(stack)
    event = whereby_sim.finish_recording(whereby_sim.meetings()[0]["roomName"])
    kommo_sim.fail_next(1, status=0, method="POST", lost_answer=True)  # Kommo made the note; we never heard
    ready(event)
    ready(event)
    assert len(recording_notes(kommo_sim, LEAD)) == 1


def test_a_transcription_gets_its_own_note_and_its_link_opens_the_transcript(stack, whereby_sim, kommo_sim):
    link_id = deal_with_recording(stack, whereby_sim, kommo_sim, LEAD, 1_767_225_000, kind="transcription")
    assert recording_notes(kommo_sim, LEAD)[0].startswith("Transcript of the video meeting")
    answer = follow(stack, link_id)
    assert answer["statusCode"] == 302
    asked = [r for r in whereby_sim.requests_seen() if r["path"].endswith("/access-link")]
    assert asked[-1]["path"].startswith("/v1/transcriptions/")


def test_a_recording_event_without_a_room_name_is_matched_to_its_room_by_its_filename(stack, whereby_sim, kommo_sim):
    open_room(stack)
    event = whereby_sim.finish_recording(whereby_sim.meetings()[0]["roomName"])
    del event["data"]["roomName"]  # Whereby's 2023 payloads carry none
    assert ready(event).startswith("noted")
    assert len(recording_notes(kommo_sim, LEAD)) == 1


def test_the_sample_event_of_a_room_of_no_stack_of_ours_is_ignored(stack, whereby_sim, kommo_sim):
    body = json.loads((SAMPLES / "whereby" / "04-recording.finished.json").read_text())
    assert ready(body) == "ignored: not a room of this stack"
    assert kommo_sim.notes() == []


def test_a_chat_rooms_recording_is_recorded_without_a_note(stack, whereby_sim, kommo_sim):
    from bridge import runtime
    from bridge.store.recordings import RecordingsStore

    token = SECRET["mattermost_tokens"][WEATHER_TEAM][0]
    assert mattermost(stack, token, WEATHER_TEAM, "Board 30m")["statusCode"] == 200
    event = whereby_sim.finish_recording(whereby_sim.meetings()[0]["roomName"])
    assert ready(event) == "recorded: a chat room's recording, for the chat side to show"
    assert ready(event) == "recorded: a chat room's recording, for the chat side to show"
    assert kommo_sim.requests_seen() == []  # no note, no Kommo call at all
    link = RecordingsStore(runtime.store()).media_link("recording", event["data"]["recordingId"])
    assert link is not None and link.link_id  # kept for the chat side to post
    assert follow(stack, link.link_id)["statusCode"] == 302


# GET /recordings/{id} ---------------------------------------------------------------------------------------
def test_the_link_answers_a_redirect_to_a_fresh_short_lived_whereby_link_each_time(stack, whereby_sim, kommo_sim):
    link_id = deal_with_recording(stack, whereby_sim, kommo_sim, LEAD, 1_767_225_000)
    first, second = follow(stack, link_id), follow(stack, link_id)
    assert first["statusCode"] == second["statusCode"] == 302
    assert first["headers"]["Cache-Control"] == "no-store"  # a cached redirect would replay an expired link
    # The short-lived link must not travel on to the media host's pages as a Referer.
    assert first["headers"]["Referrer-Policy"] == "no-referrer"
    locations = [first["headers"]["Location"], second["headers"]["Location"]]
    assert locations[0] != locations[1]
    for location in locations:
        assert location.startswith(whereby_sim.root_url + "/_media/")
        expires_ms = int(parse_qs(urlsplit(location).query)["expires"][0])
        assert expires_ms / 1000 - time.time() <= 300  # minutes, not Whereby's default hour


def test_the_whereby_link_opens_the_recording_without_the_api_key_until_the_recording_is_deleted(
    stack, whereby_sim, kommo_sim
):
    link_id = deal_with_recording(stack, whereby_sim, kommo_sim, LEAD, 1_767_225_000)
    location = follow(stack, link_id)["headers"]["Location"]
    with urllib.request.urlopen(location, timeout=5) as media:
        assert (media.status, media.headers["Content-Type"]) == (200, "video/mp4") and media.read()
    forged = location.replace("token=", "token=x")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(forged, timeout=5)
    assert refused.value.code == 403
    delete_held_recording_at_whereby(whereby_sim)
    with pytest.raises(urllib.error.HTTPError) as gone:
        urllib.request.urlopen(location, timeout=5)
    assert gone.value.code == 404


def test_an_unknown_link_gets_a_404_and_asks_whereby_nothing(stack, whereby_sim, capsys):
    from tests.unit.test_whereby_events import counted

    for link_id in ("x" * 32, "short", "A" * 31 + "!", "%2e%2e"):  # unknown, then malformed: all unknown
        answer = follow(stack, link_id)
        assert answer["statusCode"] == 404, link_id
        assert json.loads(answer["body"]) == {"error": "no such recording"}
    assert whereby_sim.requests_seen() == []
    assert counted(capsys.readouterr().out, "RecordingLinksUnknown") == 4  # a burst of them is someone guessing


def test_a_recording_whereby_gives_no_link_for_gets_a_502_not_a_4xx(stack, whereby_sim, kommo_sim, log_lines):
    from tests.unit.test_whereby_events import counted

    open_room(stack)
    # Kept in the organisation's own bucket: Whereby answers 403 to the access-link call.
    ready(whereby_sim.finish_recording(whereby_sim.meetings()[0]["roomName"], self_hosted=True))
    answer = follow(stack, link_id_in(recording_notes(kommo_sim, LEAD)[0]))
    assert answer["statusCode"] == 502
    assert json.loads(answer["body"]) == {"error": "Whereby gives no link to this recording"}
    logged = log_lines()
    assert any("403" in line for line in logged)  # the operator learns why
    assert counted("\n".join(logged), "RecordingLinksRefused") == 1


def test_a_recording_deleted_at_whereby_gets_a_410_saying_whereby_no_longer_has_it(stack, whereby_sim, kommo_sim):
    link_id = deal_with_recording(stack, whereby_sim, kommo_sim, LEAD, 1_767_225_000)
    # Someone deleted it in Whereby's dashboard: the deal is still open, so it is not our retention that removed it.
    delete_held_recording_at_whereby(whereby_sim)
    answer = follow(stack, link_id)
    assert answer["statusCode"] == 410
    assert json.loads(answer["body"]) == {"error": "Whereby no longer has this recording"}


def test_a_whereby_outage_gets_a_503_with_retry_after(stack, whereby_sim, kommo_sim):
    link_id = deal_with_recording(stack, whereby_sim, kommo_sim, LEAD, 1_767_225_000)
    whereby_sim.fail_next(5, status=503)
    answer = follow(stack, link_id)
    assert answer["statusCode"] == 503 and int(answer["headers"]["Retry-After"]) >= 1
    assert json.loads(answer["body"]) == {"error": "Whereby cannot be reached right now; try again shortly"}


def test_whereby_asking_to_wait_passes_its_wait_on_to_the_browser(stack, whereby_sim, kommo_sim):
    link_id = deal_with_recording(stack, whereby_sim, kommo_sim, LEAD, 1_767_225_000)
    whereby_sim.fail_next(1, status=429, retry_after=120)  # longer than a browser should be kept waiting
    answer = follow(stack, link_id)
    assert (answer["statusCode"], answer["headers"]["Retry-After"]) == (503, "120")
    assert json.loads(answer["body"]) == {"error": "Whereby asks us to wait; try again shortly"}


def test_no_log_line_of_a_link_request_holds_its_id(stack, whereby_sim, kommo_sim, caplog, capfd):
    caplog.set_level(logging.INFO)  # botocore DEBUG dumps raw bodies; Lambda never runs it at that level
    link_id = deal_with_recording(stack, whereby_sim, kommo_sim, LEAD, 1_767_225_000)
    access: list[str] = []
    with Gateway(stack, port=0, log=access.append) as gateway:
        opener = urllib.request.build_opener(_NoRedirect)
        # The error paths log their reasons: a refusal (once), an outage (both tries of the interactive policy).
        for code, whereby_fault, times in ((302, None, 0), (502, 403, 1), (503, 503, 2), (404, None, 0)):
            if whereby_fault:
                whereby_sim.fail_next(times, status=whereby_fault)
            path = f"/recordings/{link_id}" if code != 404 else f"/recordings/{link_id[::-1]}"
            with pytest.raises(urllib.error.HTTPError) as answered:
                opener.open(gateway.url + path, timeout=10)
            assert answered.value.code == code
    # Every record with its extra fields, everything written to stdout and stderr (Powertools' JSON lines), and
    # the gateway's access lines.
    captured = capfd.readouterr()
    lines = [json.dumps(r.__dict__, default=str) for r in caplog.records]
    lines += captured.out.splitlines() + captured.err.splitlines() + access
    assert any("refused a link" in line and "403" in line for line in lines)
    assert any("GET /recordings/{id}" in line for line in access)
    assert [line for line in lines if link_id in line or link_id[::-1] in line] == []


def test_the_api_access_log_never_logs_a_path():
    fmt = load_template()["Resources"]["HttpApi"]["Properties"]["AccessLogSettings"]["Format"]
    assert "$context.routeKey" in fmt
    assert "$context.path" not in fmt and "$request" not in fmt


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(link_id=st.text(alphabet=st.characters(codec="utf-8", exclude_characters="/"), min_size=1, max_size=64))
def test_any_id_in_the_path_gets_a_404_that_never_echoes_it(stack, link_id):
    from bridge import runtime
    from bridge.whereby.recording_link import answer

    response = answer(link_id, runtime.recording_links())
    assert response["statusCode"] == 404
    assert json.loads(response["body"]) == {"error": "no such recording"}  # the same answer, never the id


# Retention ------------------------------------------------------------------------------------------------------
def test_a_won_and_a_lost_deals_recordings_are_deleted_by_the_sweep_after_the_retention_period(
    stack, whereby_sim, kommo_sim
):
    closed_at = int(time.time()) - 60
    won = deal_with_recording(stack, whereby_sim, kommo_sim, LEAD, closed_at - 600)
    lost = deal_with_recording(stack, whereby_sim, kommo_sim, OTHER_LEAD, closed_at - 600)
    post(stack, "/kommo/close", status_body(LEAD, 142, closed_at))
    post(stack, "/kommo/close", status_body(OTHER_LEAD, 143, closed_at))
    assert stack.drain().failed == 0
    assert follow(stack, won)["statusCode"] == follow(stack, lost)["statusCode"] == 302  # kept meanwhile

    assert sweep_at(closed_at + 89 * DAY).recordings_deleted == 0
    assert len(whereby_sim.media.held()) == 2
    summary = sweep_at(closed_at + 90 * DAY + 1)
    assert summary.recordings_deleted == 2
    assert whereby_sim.media.held() == []
    assert sweep_at(closed_at + 91 * DAY).recordings_deleted == 0  # deleted once


def test_the_retention_period_is_the_template_parameter(stack, whereby_sim, kommo_sim, monkeypatch):
    use_setting(stack, monkeypatch, RECORDING_RETENTION_DAYS="7")
    closed_at = int(time.time()) - 60
    deal_with_recording(stack, whereby_sim, kommo_sim, LEAD, closed_at - 600)
    post(stack, "/kommo/close", status_body(LEAD, 142, closed_at))
    stack.drain()
    assert "deleted 7 days after the deal is won or lost" in recording_notes(kommo_sim, LEAD)[0]
    assert sweep_at(closed_at + 7 * DAY + 1).recordings_deleted == 1
    assert load_template()["Parameters"]["RecordingRetentionDays"]["Default"] == 90


def test_the_sweep_deletes_recordings_within_its_delete_cap_and_the_next_run_goes_on(
    stack, whereby_sim, kommo_sim, monkeypatch
):
    closed_at = int(time.time()) - 60
    for lead in (LEAD, OTHER_LEAD, THIRD_LEAD):
        deal_with_recording(stack, whereby_sim, kommo_sim, lead, closed_at - 600)
        post(stack, "/kommo/close", status_body(lead, 143, closed_at))
    stack.drain()
    use_setting(stack, monkeypatch, SWEEP_MAX_DELETES="2")
    deletes_before = sum(r["method"] == "DELETE" for r in whereby_sim.requests_seen())
    first = sweep_at(closed_at + 91 * DAY)
    assert (first.recordings_deleted, first.stopped) == (2, "cap")
    assert sum(r["method"] == "DELETE" for r in whereby_sim.requests_seen()) - deletes_before == 2
    assert sweep_at(closed_at + 91 * DAY).recordings_deleted == 1
    assert whereby_sim.media.held() == []


def test_a_deleted_deals_recordings_stop_opening_at_once_and_are_deleted_at_the_next_sweep(
    stack, whereby_sim, kommo_sim
):
    link_id = deal_with_recording(stack, whereby_sim, kommo_sim, LEAD, int(time.time()) - 600)
    post(stack, "/kommo/close", delete_body(LEAD))
    assert stack.drain().failed == 0
    gone = follow(stack, link_id)
    assert gone["statusCode"] == 410
    assert "deleted" in json.loads(gone["body"])["error"]
    assert sweep_at(time.time() + 1).recordings_deleted == 1
    assert whereby_sim.media.held() == []
    assert follow(stack, link_id)["statusCode"] == 410


def test_recording_deletes_are_paid_from_the_points_budget_and_wait_for_the_next_run_when_it_is_spent(
    stack, whereby_sim, kommo_sim, monkeypatch
):
    deal_with_recording(stack, whereby_sim, kommo_sim, LEAD, int(time.time()) - 600)
    post(stack, "/kommo/close", delete_body(LEAD))
    stack.drain()
    use_setting(stack, monkeypatch, WHEREBY_POINTS_PER_MINUTE="100", WHEREBY_CHAT_RESERVE_POINTS="30")
    spend_the_background_points()  # a bulk move took this minute's points
    summary = stack.invoke("SweeperFunction", {"source": "schedule"})
    assert (summary["stopped"], summary["recordings_deleted"]) == ("budget", 0)
    assert len(whereby_sim.media.held()) == 1
    from bridge import runtime

    runtime.store().table.delete_item(Key={"pk": "BUDGET#whereby", "sk": "BUDGET"})  # the next minute
    assert stack.invoke("SweeperFunction", {"source": "schedule"})["recordings_deleted"] == 1
    assert whereby_sim.media.held() == []


def test_a_recording_that_finishes_after_its_deal_was_deleted_gets_no_note_and_is_deleted(
    stack, whereby_sim, kommo_sim
):
    open_room(stack, at=int(time.time()) - 600)
    name = whereby_sim.meetings()[0]["roomName"]
    post(stack, "/kommo/close", delete_body(LEAD))
    stack.drain()
    outcome = ready(whereby_sim.finish_recording(name))
    assert outcome.startswith("recorded: the deal is deleted")
    assert recording_notes(kommo_sim, LEAD) == []
    assert sweep_at(time.time() + 1).recordings_deleted == 1
    assert whereby_sim.media.held() == []


def test_a_recording_that_finishes_after_its_deal_was_won_gets_its_note_and_the_retention(
    stack, whereby_sim, kommo_sim
):
    closed_at = int(time.time()) - 60
    open_room(stack, at=closed_at - 600)
    name = whereby_sim.meetings()[0]["roomName"]
    post(stack, "/kommo/close", status_body(LEAD, 142, closed_at))
    stack.drain()
    ready(whereby_sim.finish_recording(name))
    assert len(recording_notes(kommo_sim, LEAD)) == 1
    assert sweep_at(closed_at + 89 * DAY).recordings_deleted == 0
    assert sweep_at(closed_at + 90 * DAY + 1).recordings_deleted == 1


# The route's reach -----------------------------------------------------------------------------------------------
def test_the_recording_route_reads_only_the_whereby_key_and_recording_items():
    spec = load_template()["Resources"]["RecordingsFunction"]
    props = spec["Properties"]
    assert props["Events"]["Recording"]["Properties"]["Path"] == "/recordings/{id}"
    secrets = {
        p["AWSSecretsManagerGetSecretValuePolicy"]["SecretArn"]["Ref"]
        for p in props["Policies"]
        if "AWSSecretsManagerGetSecretValuePolicy" in p
    }
    assert secrets == {"WherebySecret"}
    statements = [s for p in props["Policies"] if "Statement" in p for s in p["Statement"]]
    reads = [s for s in statements if s["Action"] == "dynamodb:GetItem"]
    assert [s["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"] for s in reads] == [
        ["RECORDING#*", "BUDGET#whereby"]
    ]
    writes = [s for s in statements if s is not reads[0]]
    assert all(s["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"] == ["BUDGET#whereby"] for s in writes)
    assert "Query" not in json.dumps(statements) and "Scan" not in json.dumps(statements)


def test_the_recording_route_loads_no_kommo_wing():
    loaded = loaded_by("recordings")
    assert "bridge.whereby.recording_link" in loaded
    assert {m for m in loaded if m.startswith("bridge.kommo")} == set()


def test_the_worker_is_given_the_apis_url_for_the_links():
    variables = load_template()["Resources"]["WorkerFunction"]["Properties"]["Environment"]["Variables"]
    assert "${HttpApi}" in variables["API_BASE_URL"]["Fn::Sub"]
    assert variables["RECORDING_RETENTION_DAYS"] == {"Ref": "RecordingRetentionDays"}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # the Location is Whereby's; the test looks at the 302 itself
        return None


def delete_held_recording_at_whereby(whereby_sim) -> None:
    """Someone deletes the one recording Whereby holds, through Whereby's own API (its dashboard does the same)."""
    [held] = whereby_sim.media.held()
    request = urllib.request.Request(
        f"{whereby_sim.base_url}/recordings/{held['id']}",
        method="DELETE",
        headers={"Authorization": f"Bearer {whereby_sim.api_key}"},
    )
    urllib.request.urlopen(request, timeout=5).close()
