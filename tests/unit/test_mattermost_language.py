"""/whereby answers each Mattermost user in their own language: their ``locale``, read through the bot once per user
and container, else the stack's ``Language``; a room's post, and every later edit of it, in its creator's.

Mattermost is the simulator over real HTTP (its bot API answers ``GET /api/v4/users/{id}`` with the locale a test
sets), Whereby is its simulator, AWS is moto.
"""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.gateway import Gateway
from tests.unit.test_mattermost_command import OTHER_USER, run_at
from tests.unit.test_mattermost_live_posts import CHANNEL, CREATOR, TEAM, end_button, whereby, with_bot
from tests.unit.test_whereby_events import HELD_AT, SIGNING_SECRET, a_meeting

GERMAN_USER = "dezz8t4ttgmtxqiwfohijayzc0"


@pytest.fixture
def bot(stack, mattermost_sim):
    """ChatBotSecret holds the simulator's bot, a member of the command's channel."""
    with_bot(stack, mattermost_sim)
    mattermost_sim.add_member(CHANNEL)
    return mattermost_sim


@pytest.fixture
def events(stack, whereby_sim, monkeypatch):
    """The stack's routes on a real port: Whereby's session events and the End buttons' clicks arrive there."""
    from bridge import runtime

    with Gateway(stack, port=0, log=None) as running:
        whereby_sim.configure_webhook(f"{running.url}/whereby/events", SIGNING_SECRET)
        monkeypatch.setenv("API_BASE_URL", running.url)
        runtime.reset()
        yield running


def stack_language(monkeypatch, language: str) -> None:
    """The stack's ``Language`` parameter, as the template gives it to the functions."""
    from bridge import runtime

    monkeypatch.setenv("DEFAULT_LANGUAGE", language)
    runtime.reset()


def new_container() -> None:
    """What a cold start forgets: the cached ports, and with them the users' locales."""
    from bridge import runtime

    runtime.reset()


def room_name(whereby_sim, index: int = 0) -> str:
    return whereby_sim.meetings()[index]["roomName"].lstrip("/")


def five_people_for_21_minutes(whereby_sim, room: str) -> None:
    people = [whereby_sim.join(room, name, "visitor", at=HELD_AT) for name in ("Ana", "Boris", "Vera", "Gleb", "Dina")]
    for person in people:
        whereby_sim.leave(person, at=HELD_AT + 21 * 60)


# whose language ----------------------------------------------------------------------------------------------------
def test_a_spanish_user_gets_the_room_post_the_host_link_a_refusal_and_the_help_in_spanish(stack, whereby_sim, bot):
    bot.set_locale(CREATOR, "es")

    host = whereby(stack, "Standup 90m")
    [meeting] = whereby_sim.meetings()
    [post] = bot.posts(CHANNEL)
    assert post["message"].startswith(
        f":video_camera: **Standup** · [Entrar a la sala de Whereby]({meeting['roomUrl']})"
    )
    assert "Abierta hasta " in post["message"] and " UTC (1 h 30 min)." in post["message"]
    assert end_button(post)["name"] == "Terminar reunión"
    assert host["text"].startswith(
        f"Solo tú puedes ver esto. Tu enlace de anfitrión para **Standup**: {meeting['hostRoomUrl']}"
    )
    assert "Para cerrar la sala antes de " in host["text"]

    refused = whereby(stack, "stats 12d")
    assert refused["response_type"] == "ephemeral"
    assert refused["text"].startswith("“12d” no es un período que `/weather stats` conozca: usa 7d, 30d o 90d")
    assert refused["text"].endswith("No se cambió nada; `/weather help` explica cómo usarlo.")

    helped = whereby(stack, "help")["text"]
    assert helped.startswith("**/weather** crea salas de video de Whereby para este canal.")
    assert "(por defecto 1 h, mínimo 5 min y máximo 8 h)" in helped
    assert len(whereby_sim.meetings()) == 1  # the refusal and the help changed nothing

    whereby(stack, "")  # no topic: the default one, in the caller's language
    untitled = bot.posts(CHANNEL)[-1]
    assert untitled["message"].startswith(":video_camera: **Reunión de Whereby** · [Entrar a la sala de Whereby](")


def test_a_russian_user_gets_russian_answers_in_each_of_the_three_plural_forms(stack, whereby_sim, bot, events):
    bot.set_locale(CREATOR, "ru")
    bot.set_locale(OTHER_USER, "ru")

    whereby(stack, "Планёрка 45m")
    [post] = bot.posts(CHANNEL)
    assert "[Войти в комнату Whereby](" in post["message"] and "(45 мин)." in post["message"]
    refused = whereby(stack, "Обзор 0m")["text"]
    assert refused.startswith("«0m» — недопустимая длительность: комната открыта минимум 5 минут и максимум 8 ч.")
    assert "например `/weather Обзор 1h30m`" in refused

    now = time.time()
    run_at(now, "")  # an untitled room; a colleague asks for one again a few seconds later
    seconds = {n: run_at(now + n, "", user_id=OTHER_USER)["text"] for n in (21, 3, 5)}
    assert seconds[21].startswith("21 секунду назад в этом канале создали комнату: [войти](")
    assert seconds[3].startswith("3 секунды назад")
    assert seconds[5].startswith("5 секунд назад")

    five_people_for_21_minutes(whereby_sim, room_name(whereby_sim))
    assert stack.drain().failed == 0
    assert bot.post(post["id"])["message"] == ":video_camera: **Планёрка** · Встреча завершена · 21 мин · 5 участников"


def test_a_brazilian_user_gets_portuguese(stack, whereby_sim, bot):
    bot.set_locale(CREATOR, "pt-BR")
    assert whereby(stack, "list")["text"].startswith("Não há nenhuma sala do Whereby aberta neste canal.")
    whereby(stack, "Revisão 30m")
    [post] = bot.posts(CHANNEL)
    assert "[Entrar na sala do Whereby](" in post["message"] and "Aberta até " in post["message"]


def test_a_language_we_do_not_have_or_a_failed_lookup_gets_the_stacks_language(stack, whereby_sim, bot, monkeypatch):
    stack_language(monkeypatch, "es")
    bot.set_locale(GERMAN_USER, "de")
    german = whereby(stack, "help", user=GERMAN_USER)
    assert german["text"].startswith("**/weather** crea salas de video de Whereby para este canal.")

    bot.fail_user_lookups(status=500)
    failed = whereby(stack, "Standup 30m")  # the creator's locale cannot be read: the room is made all the same
    assert failed["text"].startswith("Solo tú puedes ver esto.")
    assert len(whereby_sim.meetings()) == 1 and "Entrar a la sala de Whereby" in bot.posts(CHANNEL)[0]["message"]

    new_container()
    bot.fail_user_lookups(status=200, delay=1.5)  # Mattermost answers, but later than the lookup waits
    started = time.monotonic()
    slow = whereby(stack, "Retro 30m")
    assert time.monotonic() - started < 4
    assert slow["text"].startswith("Solo tú puedes ver esto.") and len(whereby_sim.meetings()) == 2


def test_a_users_locale_is_read_once_per_container(stack, whereby_sim, bot):
    bot.set_locale(CREATOR, "es")
    for text in ("help", "list", "Standup 30m", "stats"):
        assert whereby(stack, text)["response_type"] in ("ephemeral", "in_channel")
    whereby(stack, "help", user=OTHER_USER)
    assert (bot.user_lookups(CREATOR), bot.user_lookups(OTHER_USER)) == (1, 1)
    # The lookups have their own count: the request log holds the posts' calls alone.
    assert not [r for r in bot.requests_seen() if r["path"].startswith("/api/v4/users/")]

    new_container()
    assert whereby(stack, "help")["text"].startswith("**/weather** crea salas")
    assert bot.user_lookups(CREATOR) == 2


def test_without_a_bot_no_lookup_is_made_and_the_stacks_language_is_spoken(
    stack, whereby_sim, mattermost_sim, monkeypatch
):
    stack_language(monkeypatch, "ru")
    mattermost_sim.set_locale(CREATOR, "es")
    answer = whereby(stack, "Standup 30m")
    assert answer["response_type"] == "in_channel"
    assert "[Войти в комнату Whereby](" in answer["text"]
    assert answer["extra_responses"][0]["text"].startswith("Это видите только вы.")
    assert answer["attachments"][0]["actions"][0]["name"] == "Завершить встречу"
    assert mattermost_sim.user_lookups() == 0


HELP_OPENINGS = {
    "en": "**/weather** makes Whereby video rooms",
    "es": "**/weather** crea salas de video",
    "pt_BR": "**/weather** cria salas de vídeo",
    "ru": "**/weather** создаёт видеокомнаты",
}


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    locale=st.one_of(st.sampled_from(["es-MX", "pt_PT", "RU", "zh-CN", "", "en-GB", "ru\u0000"]), st.text(max_size=40))
)
def test_whatever_locale_mattermost_gives_the_command_answers_in_one_of_our_languages(stack, bot, locale):
    new_container()
    bot.set_locale(CREATOR, locale)
    answer = whereby(stack, "help")
    assert answer["text"].startswith(tuple(HELP_OPENINGS.values()))


# the post's later edits ---------------------------------------------------------------------------------------------
def test_the_meetings_end_edits_the_post_in_its_creators_language_whoever_causes_it(stack, whereby_sim, bot, events):
    bot.set_locale(CREATOR, "es")
    bot.set_locale(OTHER_USER, "ru")
    whereby(stack, "Standup 30m")
    whereby(stack, "Retro 30m")
    standup, retro = (
        next(p for p in bot.posts(CHANNEL) if f"**{topic}**" in p["message"]) for topic in ("Standup", "Retro")
    )

    # Whereby's event: the stack speaks English, the post stays Spanish.
    a_meeting(whereby_sim, room_name(whereby_sim, 0))
    assert stack.drain().failed == 0
    ended = bot.post(standup["id"])
    assert ended["message"] == ":video_camera: **Standup** · Reunión terminada · 35 min · 2 personas"
    assert ended["props"]["attachments"][0]["text"] == "Reunión terminada · 35 min · 2 personas"

    # A Russian colleague's click is refused in Russian, and leaves the post as it was.
    refused = bot.click(retro["id"], user_id=OTHER_USER, user_name="maria", team_id=TEAM)
    assert refused.ephemeral_text == "Завершить **Retro** может только тот, кто её создал."
    assert bot.post(retro["id"]) == retro

    # The creator now reads Russian: their answer is in Russian, the post keeps the language it was made in.
    bot.set_locale(CREATOR, "ru")
    new_container()
    clicked = bot.click(retro["id"], user_id=CREATOR, user_name="alan", team_id=TEAM)
    assert clicked.ephemeral_text == "Вы завершили **Retro**; её ссылка больше не работает."
    assert bot.post(retro["id"])["message"] == (
        ":white_check_mark: La sala de Whereby **Retro** terminó; su enlace ya no funciona."
    )
    assert json.dumps(bot.post(retro["id"])["props"]).count("Terminar") == 0  # the End button is gone
