"""Slack speaks each user's language: the caller's Slack locale (``users.info``) for the room's post, host link and
hints, the creator's for the post's later edits, the clicker's for an answer to a click, else the stack's Language.

Over real HTTP, as the other Slack tests: the Slack simulator signs the commands and clicks, serves the bot's Web API
(``users.info`` with each user's locale) and keeps the channel's messages; the worker drains the moto FIFO queue;
Whereby is its simulator, whose session events reach the stack's route.
"""

from __future__ import annotations

import json

import boto3
import pytest

from devstack.gateway import Gateway
from tests.unit.test_slack_live_posts import (
    CHANNEL,
    CREATOR,
    OTHER_CHANNEL,
    STRANGER,
    TEAM,
    buttons,
    click,
    room_of,
    start,
)
from tests.unit.test_whereby_events import HELD_AT, SIGNING_SECRET, a_meeting

# What each language's reader sees, word for word as the catalogue says it.
SAID = {
    "es-LA": {
        "join": "Entrar a la sala de Whereby>",
        "open": "UTC (45 min).",
        "buttons": ("Entrar a la sala", "Cerrar sala", "¿Cerrar esta sala?"),
        "host": "Solo tú ves este mensaje. Tu enlace de anfitrión para *Revisión*:",
        "close": "Para cerrar la sala antes de",
        "hint": "La app de Whereby no es miembro de este canal",
        "ended": "*Revisión* · Reunión terminada · 20 min · 5 personas",
    },
    "ru-RU": {
        "join": "Войти в комнату Whereby>",
        "open": "UTC (45 мин).",
        "buttons": ("Войти", "Закрыть комнату", "Закрыть эту комнату?"),
        "host": "Это видите только вы. Ваша ссылка организатора для *Revisión*:",
        "close": "Чтобы закрыть комнату раньше",
        "hint": "Приложение Whereby не состоит в этом канале",
        # Five: Russian's third plural form ("участников", not "участника" or "участник").
        "ended": "*Revisión* · Встреча завершена · 20 мин · 5 участников",
    },
    "pt-BR": {
        "join": "Entrar na sala do Whereby>",
        "open": "UTC (45 min).",
        "buttons": ("Entrar na sala", "Encerrar sala", "Encerrar esta sala?"),
        "host": "Só você vê esta mensagem. Seu link de anfitrião para *Revisión*:",
        "close": "Para fechar a sala antes de",
        "hint": "O app do Whereby não participa deste canal",
        "ended": "*Revisión* · Reunião encerrada · 20 min · 5 pessoas",
    },
}
SPANISH_ROOM = ":video_camera: *Revisión* · <{url}|Entrar a la sala de Whereby>"


@pytest.fixture
def gateway(stack, whereby_sim):
    """The stack's routes on a real port, Whereby's signed session events included."""
    with Gateway(stack, port=0, log=None) as running:
        whereby_sim.configure_webhook(f"{running.url}/whereby/events", SIGNING_SECRET)
        yield running


@pytest.fixture
def bot(stack, slack_sim, monkeypatch):
    """The workspace's bot token in the ChatBotSecret, and the Web API pointed at the simulator."""
    from bridge import runtime

    boto3.client("secretsmanager", region_name="eu-west-1").put_secret_value(
        SecretId=stack.stack.refs["ChatBotSecret"],
        SecretString=json.dumps({"slack_bot_tokens": {TEAM: slack_sim.bot_token}}),
    )
    monkeypatch.setenv("SLACK_API_URL", slack_sim.api_url)
    runtime.reset()
    return slack_sim.bot_token


def stack_language(monkeypatch, language: str) -> None:
    """The stack's ``Language`` parameter, as the template passes it to the functions."""
    from bridge import runtime

    monkeypatch.setenv("DEFAULT_LANGUAGE", language)
    runtime.reset()


def five_people_meet(whereby_sim, room: str) -> None:
    """Five people meet for 20 minutes."""
    people = [whereby_sim.join(room, name, "visitor", at=HELD_AT) for name in ("Ana", "Bo", "Cy", "Di", "Ed")]
    for person in people:
        whereby_sim.leave(person, at=HELD_AT + 20 * 60)


def labels(message: dict) -> tuple[str, str, str]:
    found = buttons(message)
    end = found["end_room"]
    return found["join_room"]["text"]["text"], end["text"]["text"], end["confirm"]["title"]["text"]


@pytest.mark.parametrize("locale", list(SAID))
def test_a_slack_user_reads_the_room_post_host_link_hint_and_meetings_end_in_their_own_language(
    stack, whereby_sim, slack_sim, gateway, bot, locale
):
    said = SAID[locale]
    slack_sim.set_locale(CREATOR, locale)
    slack_sim.private_channel(OTHER_CHANNEL)

    answer = start(slack_sim, gateway, "Revisión 45m")
    # The acknowledgement comes before anyone could ask Slack for the user's language: the stack's (English).
    assert answer.body == {"response_type": "ephemeral", "text": "Making your Whereby room…"}
    hidden = start(slack_sim, gateway, "Oculta 45m", channel_id=OTHER_CHANNEL)
    assert stack.drain().failed == 0

    [post] = slack_sim.messages(CHANNEL)
    assert post["by"] == "bot" and said["join"] in post["text"] and said["open"] in post["text"]
    assert labels(post) == said["buttons"]
    [host] = slack_sim.posts(answer.response_url)
    assert host["text"].startswith(said["host"]) and said["close"] in host["text"]
    assert "`/whereby end revision-" in host["text"]  # the command stays the one the user types
    # The channel the bot is not in: the post falls back to response_url, and the caller is told why, in their words.
    [fallen_back, hidden_host] = slack_sim.posts(hidden.response_url)
    assert said["join"] in fallen_back["text"] and said["hint"] in hidden_host["text"]

    five_people_meet(whereby_sim, room_of(whereby_sim, "revision"))
    assert stack.drain().failed == 0
    [post] = slack_sim.messages(CHANNEL)
    assert [edit["text"] for edit in post["edits"]] == [said["ended"]]


@pytest.mark.parametrize("without", ["unknown-locale", "missing-scope", "no-bot-token"])
def test_without_the_users_language_the_stack_language_is_spoken_and_the_room_is_made_and_posted_once(
    stack, whereby_sim, slack_sim, gateway, request, monkeypatch, without
):
    stack_language(monkeypatch, "es")
    if without != "no-bot-token":
        request.getfixturevalue("bot")
    slack_sim.set_locale(CREATOR, "de-DE")  # a language the catalogue does not have
    if without == "missing-scope":
        slack_sim.refuse_users_info("missing_scope")  # the app was installed without users:read

    answer = start(slack_sim, gateway, "Revisión 45m")
    assert answer.body == {"response_type": "ephemeral", "text": "Creando tu sala de Whereby…"}
    assert stack.drain().failed == 0

    [meeting] = whereby_sim.meetings()
    [post] = slack_sim.messages(CHANNEL)
    assert post["text"].startswith(SPANISH_ROOM.format(url=meeting["roomUrl"]))
    assert post["by"] == ("response_url" if without == "no-bot-token" else "bot")
    host = slack_sim.posts(answer.response_url)[-1]
    assert host["text"].startswith("Solo tú ves este mensaje.")
    assert slack_sim.users_info_calls() == (0 if without == "no-bot-token" else 1)


def test_each_users_language_is_asked_of_slack_once_per_container(stack, whereby_sim, slack_sim, gateway, bot):
    slack_sim.set_locale(CREATOR, "es-LA")
    slack_sim.set_locale(STRANGER, "ru-RU")
    start(slack_sim, gateway, "Uno")
    start(slack_sim, gateway, "Dos")
    start(slack_sim, gateway, "Tres", user_id=STRANGER)
    start(slack_sim, gateway, "Cuatro", user_id=STRANGER, channel_id=OTHER_CHANNEL)
    assert stack.drain().failed == 0

    assert len(whereby_sim.meetings()) == 4
    assert (slack_sim.users_info_calls(CREATOR), slack_sim.users_info_calls(STRANGER)) == (1, 1)
    spoken = {
        message["text"].split("*")[1]: "es" if "Entrar a la sala" in message["text"] else "ru"
        for message in slack_sim.messages()
        if "Entrar a la sala" in message["text"] or "Войти в комнату" in message["text"]
    }
    assert spoken == {"Uno": "es", "Dos": "es", "Tres": "ru", "Cuatro": "ru"}


def test_the_creators_end_click_and_the_meetings_end_keep_the_post_in_the_creators_language(
    stack, whereby_sim, slack_sim, gateway, bot, monkeypatch
):
    stack_language(monkeypatch, "pt-BR")  # neither the creator's language nor the clicker's
    slack_sim.set_locale(CREATOR, "es-LA")
    slack_sim.set_locale(STRANGER, "ru-RU")
    start(slack_sim, gateway, "Tablero")
    start(slack_sim, gateway, "Retro")
    assert stack.drain().failed == 0
    board, retro = slack_sim.messages(CHANNEL)

    refused = click(slack_sim, gateway, board["ts"], user_id=STRANGER)
    assert stack.drain().failed == 0
    [told] = slack_sim.posts(refused.response_url)  # for the stranger alone: in the stranger's language
    assert told["text"] == "Закрыть комнату *Tablero* может только её создатель."
    assert slack_sim.messages(CHANNEL)[0]["edits"] == []

    click(slack_sim, gateway, board["ts"])
    a_meeting(whereby_sim, room_of(whereby_sim, "retro"))
    assert stack.drain().failed == 0
    assert stack.drain().failed == 0
    board, retro = slack_sim.messages(CHANNEL)
    assert [edit["text"] for edit in board["edits"]] == [
        ":white_check_mark: La sala de Whereby *Tablero* se cerró; su enlace ya no funciona."
    ]
    assert buttons(board) == {}
    assert [edit["text"] for edit in retro["edits"]] == ["*Retro* · Reunión terminada · 35 min · 2 personas"]


def test_a_user_who_changes_their_slack_language_is_read_in_it_within_the_hour(slack_sim):
    from bridge.chat.slack_bot import SlackBot
    from bridge.chat.slack_worker import LOCALE_SECONDS, UserLanguages

    now = [1000.0]
    languages = UserLanguages(
        bot=lambda team: SlackBot(slack_sim.api_url, slack_sim.bot_token) if team == TEAM else None,
        fallback=lambda: "en",
        clock=lambda: now[0],
    )
    slack_sim.set_locale(CREATOR, "pt-BR")
    assert languages(TEAM, CREATOR) == "pt_BR"
    slack_sim.set_locale(CREATOR, "ru-RU")
    now[0] += LOCALE_SECONDS - 1
    assert languages(TEAM, CREATOR) == "pt_BR"  # kept: no call on every command
    now[0] += 1
    assert languages(TEAM, CREATOR) == "ru"
    assert languages("T0OTHERTEAM", CREATOR) == "en"  # no bot for that workspace: nothing asked
    assert slack_sim.users_info_calls() == 2


def test_slack_not_answering_users_info_gives_the_stack_language_and_it_is_asked_again_minutes_later(slack_sim):
    from bridge.chat.slack_bot import SlackBot
    from bridge.chat.slack_worker import UNANSWERED_SECONDS, UserLanguages

    now = [1000.0]
    languages = UserLanguages(
        bot=lambda team: SlackBot(slack_sim.api_url, slack_sim.bot_token),
        fallback=lambda: "es",
        clock=lambda: now[0],
    )
    slack_sim.set_locale(CREATOR, "ru-RU")
    slack_sim.fail_next(1, status=503)
    assert languages(TEAM, CREATOR) == "es"
    assert languages(TEAM, CREATOR) == "es"  # not asked on every command while Slack is down
    now[0] += UNANSWERED_SECONDS
    assert languages(TEAM, CREATOR) == "ru"
