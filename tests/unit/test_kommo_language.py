"""A deal's notes and tasks speak the Kommo account's language, else the stack's ``Language``; the recording link's
answers speak the browser's.

Deals enter the stage through the real webhook route and the worker; Kommo and Whereby are the simulators over
HTTP, AWS is moto.
"""

from __future__ import annotations

import json
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core.i18n import LANGUAGES
from tests.conftest import DEMO_STATUS
from tests.kommo_bodies import status_body
from tests.unit.test_close_and_sweep import open_room, post
from tests.unit.test_hardening import use_setting
from tests.unit.test_kommo_meetings import LEAD, MEETING, OWNER, enter_demo, lead_body, meetings  # noqa: F401
from tests.unit.test_kommo_meetings import post as post_hook
from tests.unit.test_whereby_events import LEAD as ROOM_LEAD
from tests.unit.test_whereby_events import a_meeting, gateway, notes_saying, room_name  # noqa: F401  (a fixture)


def test_a_russian_account_gets_the_meeting_note_and_the_task_in_russian(meetings, whereby_sim, kommo_sim):  # noqa: F811
    kommo_sim.language = "ru"
    kommo_sim.add_lead(LEAD, status_id=DEMO_STATUS, responsible_user_id=OWNER)
    enter_demo(meetings)

    [meeting] = whereby_sim.meetings()
    [note] = kommo_sim.notes(LEAD)
    assert note["params"]["text"].splitlines() == [
        "Видеокомната Whereby для «Demo»",
        "Встреча: чт, 4 дек., 14:00 (Europe/Madrid)",
        f"Ссылка для клиента: {meeting['roomUrl']}",
        f"Ссылка организатора (только для ответственного за сделку): {meeting['hostRoomUrl']}",
        "Открыта до: чт, 4 дек., 15:15 (Europe/Madrid).",
    ]
    [task] = kommo_sim.tasks(LEAD)
    assert task["text"] == f"Встреча в Whereby (Demo). Ссылка для клиента: {meeting['roomUrl']}"


def test_a_russian_account_is_told_the_meeting_was_held_with_a_russian_plural(stack, whereby_sim, kommo_sim, gateway):  # noqa: F811
    kommo_sim.language = "ru"
    open_room(stack)
    a_meeting(whereby_sim, room_name(whereby_sim))  # Ana and a client, 35 minutes on Sunday 4 January
    assert stack.drain().failed == 0

    session = whereby_sim.events()[0]["data"]["roomSessionId"]
    assert notes_saying(kommo_sim, "Встреча прошла", ROOM_LEAD) == [
        "Встреча прошла вс, 4 янв., 14:22\u201314:57 (Europe/Madrid, 35 мин) · 2 человека: Ana (организатор), "
        "Client (гость)\nСессия Whereby " + session  # noqa: RUF001  (Russian, not a look-alike)
    ]


def test_an_account_in_a_language_without_a_catalogue_gets_english_or_the_language_parameter(
    meetings,  # noqa: F811
    whereby_sim,
    kommo_sim,
    monkeypatch,
):
    kommo_sim.language = "de"
    enter_demo(meetings)
    use_setting(meetings, monkeypatch, DEFAULT_LANGUAGE="es")
    other = lead_body("status", DEMO_STATUS, int(time.time()) - 60, MEETING).replace(
        str(LEAD).encode(), str(LEAD + 1).encode()
    )
    post_hook(meetings, other)
    assert meetings.drain().failed == 0

    [english] = kommo_sim.notes(LEAD)
    assert "Meeting: Thu 4 Dec, 14:00 (Europe/Madrid)" in english["params"]["text"].splitlines()
    [spanish] = kommo_sim.notes(LEAD + 1)
    assert "Reunión: jue, 4 dic, 14:00 (Europe/Madrid)" in spanish["params"]["text"].splitlines()


def test_an_account_that_cannot_be_read_still_gets_its_note_in_the_stacks_language(
    meetings,  # noqa: F811
    whereby_sim,
    kommo_sim,
    monkeypatch,
):
    use_setting(meetings, monkeypatch, DEFAULT_LANGUAGE="es")
    kommo_sim.language = "ru"
    kommo_sim.fail_next(1, status=403, method="GET")  # the account's first read is refused
    enter_demo(meetings)

    [note] = kommo_sim.notes(LEAD)
    assert note["params"]["text"].startswith("Sala de video de Whereby para Demo\nReunión: jue, 4 dic, 14:00")


def test_a_close_note_posted_in_english_is_not_posted_again_in_russian_when_the_account_changes_language(
    stack, whereby_sim, kommo_sim, monkeypatch
):
    from bridge import runtime

    open_room(stack, ROOM_LEAD)
    # The close note is made but its answer is lost, and the look for it fails: the job is retried later.
    kommo_sim.fail_next(1, status=0, method="POST", lost_answer=True)
    kommo_sim.fail_next(3, status=503, method="GET")
    assert post(stack, "/kommo/close", status_body(ROOM_LEAD, 142, 1_767_225_600))[0] == 200
    assert stack.drain(max_rounds=1).failed == 1

    kommo_sim.language = "ru"
    runtime.reset()  # a new container: it reads the account afresh
    assert stack.drain().failed == 0

    closing = [n["params"]["text"] for n in kommo_sim.notes(ROOM_LEAD) if "closed" in n["params"]["text"]]
    assert [text.splitlines()[0] for text in closing] == ["Video room closed: deal won."]
    assert notes_saying(kommo_sim, "закрыта", ROOM_LEAD) == []
    assert whereby_sim.meetings() == []


def test_a_russian_no_show_note_whose_answer_was_lost_is_found_not_posted_twice(stack, whereby_sim, kommo_sim):
    from tests.unit.test_whereby_events import sweep_at

    kommo_sim.language = "ru"
    open_room(stack)
    name = room_name(whereby_sim)
    # The no-show note is made but its answer is lost: it must be found by its Russian marker, not made again.
    kommo_sim.fail_next(1, status=0, method="POST", lost_answer=True)
    assert sweep_at(2 * 3600)["deleted"] == 1
    assert stack.drain().failed == 0

    [note] = notes_saying(kommo_sim, "Никто не пришёл")
    assert note.endswith(f"Никто не пришёл на встречу в комнате {name}")


def test_a_russian_account_is_told_its_recording_is_ready_in_russian(stack, whereby_sim, kommo_sim, gateway):  # noqa: F811
    kommo_sim.language = "ru"
    open_room(stack)
    whereby_sim.finish_recording(room_name(whereby_sim))  # Whereby's signed event, through the route and the worker
    assert stack.drain().failed == 0

    [note] = notes_saying(kommo_sim, "Запись видеовстречи")
    assert note.startswith("Запись видеовстречи (Demo) готова:")


# The recording link's answers ---------------------------------------------------------------------------------
def test_a_recording_link_answers_in_the_browsers_language_else_in_the_language_parameter(stack, monkeypatch):
    unknown = f"/recordings/{'x' * 32}"
    answer = stack.request("GET", unknown, headers={"accept-language": "ru-RU,ru;q=0.9,en;q=0.8"})
    assert answer["statusCode"] == 404
    assert json.loads(answer["body"]) == {"error": "такой записи нет"}
    assert (answer["headers"]["Content-Language"], answer["headers"]["Vary"]) == ("ru", "Accept-Language")

    use_setting(stack, monkeypatch, DEFAULT_LANGUAGE="pt-BR")
    answer = stack.request("GET", unknown, headers={"accept-language": "de-DE,de;q=0.9"})
    assert json.loads(answer["body"]) == {"error": "essa gravação não existe"}


def test_the_browsers_first_choice_by_weight_wins_and_a_refused_language_is_never_chosen():
    from bridge.whereby.recording_link import reader_language

    assert reader_language("en;q=0.5, es;q=0.8, ru", "en") == "ru"
    assert reader_language("de, pt-BR;q=0.7, es;q=0.7", "en") == "pt_BR"
    assert reader_language("ru;q=0, *", "es") == "es"
    assert reader_language("", "es") == "es"


@settings(max_examples=50)
@given(st.text(max_size=300), st.sampled_from(LANGUAGES))
def test_whatever_a_browser_sends_the_answer_is_in_a_language_the_catalogue_has(header: str, default: str) -> None:
    from bridge.whereby.recording_link import reader_language

    assert reader_language(header, default) in LANGUAGES
