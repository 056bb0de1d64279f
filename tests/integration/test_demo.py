"""``make demo`` tells one deal's story, step by step, and exits 0: each step shows the one note the deal got, the
room follows the meeting, the owner's task follows it too, the recording's link opens it, and the won deal has no
room left and its recording is deleted when the retention ends. Then ``/whereby`` in Mattermost and in Slack: the
bots' posts, each edited once when its meeting ended, the End button refused to a stranger and obeyed for the
creator, and no room left at Whereby."""

from __future__ import annotations

import contextlib
import io
import re

import pytest

from devstack.demo import STEPS, main

pytestmark = pytest.mark.integration

STEP = re.compile(r"^(\d+)\. (.+)$")
TIME = r"\w{3} \d{1,2} \w{3}, (\d\d:\d\d) \(Europe/Madrid\)"


@pytest.fixture(scope="module")
def demo() -> str:
    """What ``make demo`` printed, once for the module: it exited 0."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")  # main() sets line buffering on its stdout
    with contextlib.redirect_stdout(out):
        code = main()
    out.seek(0)
    printed = out.read()
    assert code == 0, printed
    return printed


def steps_of(output: str) -> dict[str, list[str]]:
    """The demo's output, cut at each numbered step title."""
    steps: dict[str, list[str]] = {}
    lines: list[str] = []
    for line in output.splitlines():
        if match := STEP.match(line):
            lines = steps.setdefault(match.group(2), [])
        else:
            lines.append(line)
    return steps


def notes_in(lines: list[str]) -> list[str]:
    """The notes a step printed: each is a 'Kommo: 1 new note' line and its quoted text."""
    notes: list[str] = []
    quoting = False
    for line in lines:
        if "Kommo: 1 new note on the deal" in line:
            notes.append("")
            quoting = True
        elif quoting and line.strip().startswith("|"):
            notes[-1] += line.strip()[2:] + "\n"
        else:
            quoting = False
    return notes


def test_make_demo_tells_the_story_of_one_deal_with_exactly_one_note_per_step(demo):
    output = demo
    steps = steps_of(output)
    assert list(steps) == [title for title, _ in STEPS]
    entered, room, moved, met, recorded, won, *chat = steps.values()
    assert [output.count("Kommo: 1 new note"), *(len(notes_in(step)) for step in steps.values())] == [
        5,
        0,
        1,
        1,
        1,
        1,
        1,
        *[0] * len(chat),
    ]

    sent = "\n".join(entered)
    first = re.search(rf"custom field 583921 \(Meeting time\) = \d+: {TIME}", sent)
    assert first and "leads[status]: lead 30267969 -> status 16525558" in sent and '-> 200 {"accepted": 1' in sent

    shown = "\n".join(room)
    assert shown.count("+ 60 min + 15 min grace") == 1  # the room lives until the meeting is over, and a grace
    assert f"Meeting: {first.group(0).split(': ', 1)[1]}" in notes_in(room)[0]
    due = re.search(rf"task (\d+) \(type 2, for user 1764433\) due {TIME}", shown)
    assert due and due.group(2) == first.group(1)

    moving = "\n".join(moved)
    assert "leads[update]: lead 30267969" in moving and "deleted" in moving and "+ 60 min + 15 min grace" in moving
    assert notes_in(moved)[0].startswith("Whereby video room for Demo; the meeting moved")
    moved_to = re.search(rf"task (\d+) \(type 2, for user 1764433\) moved to {TIME}", moving)
    assert moved_to and moved_to.group(1) == due.group(1)  # the same task, not a second one

    assert "6 signed events, answered 200" in "\n".join(met)
    held = notes_in(met)[0]
    assert re.match(r"Meeting held \w{3} \d{1,2} \w{3}, \d\d:02\u2013\d\d:36 \(Europe/Madrid, 34 min\)", held), held
    assert "2 people: Ana (host), Client (guest)" in held

    recording = "\n".join(recorded)
    assert "recording.finished, answered 200" in recording
    note = notes_in(recorded)[0]
    link = re.search(r"^http://127\.0\.0\.1:\d+/recordings/([A-Za-z0-9_-]{6})\u2026$", note, re.MULTILINE)
    assert note.startswith("Recording of the video meeting (Demo) is ready:") and link, note  # our API, id shortened
    assert re.search(r"-> 302 Location: http://127\.0\.0\.1:\d+/_media/\S+\?token=[\w-]{6}\u2026&", recording)
    assert "GET <Location> -> 200 video/mp4" in recording

    closing = "\n".join(won)
    assert "status 142 (won)" in closing and "no room left" in closing
    assert notes_in(won)[0].startswith("Video room closed: deal won.")
    kept = re.search(rf"Recording: kept until {TIME} = closed {TIME} \+ RecordingRetentionDays 90", closing)
    assert kept, closing  # the hours may differ by the zone's summer time
    assert closing.count(f"GET /recordings/{link.group(1)}\u2026") == 2
    assert "-> 302 (it opens until then)" in closing and "1 recording deleted; Whereby holds 0" in closing
    assert '-> 410 {"error": "this recording was deleted' in closing
    last = output.splitlines()[-1]
    assert last.startswith("Demo OK") and "3 chat posts by the bots (1 Mattermost, 2 Slack)" in last
    assert "no room and no recording left at Whereby" in last


def test_make_demo_shows_whereby_in_both_chats_with_posts_that_follow_the_meeting(demo):
    mattermost, slack, met, clicked, ended = list(steps_of(demo).values())[6:11]
    said = "\n".join(mattermost)
    assert "-> 200, ephemeral (for alan only):" in said  # the host link, for the caller alone
    assert re.search(r"Your host link for \*\*Sprint review\*\*: https://\S+\?roomKey=[\w-]{6}\u2026$", said, re.M)
    post = (
        "Mattermost: the bot's post in channel fukxanjgjbnp7ng383at53k1sy (meeting_status STARTED, button End meeting)"
    )
    assert post in said and "| :video_camera: **Sprint review** \u00b7 [Join the Whereby room](" in said

    said = "\n".join(slack)
    assert re.search(r"-> 200 in 0\.\d\d s: .+Making your Whereby room", said)  # acknowledged at once
    assert "Slack: the bot's message in channel C0LOCALCHAN (buttons Join room, End room)" in said
    assert "Slack: through the response_url, ephemeral (for anna.petrova only):" in said
    assert re.search(r"\*Design sync\*: <https://\S+\?roomKey=[\w-]{6}\u2026\|host link>$", said, re.M)

    said = "\n".join(met)
    assert "14 signed events, answered 200" in said
    assert "Mattermost: the bot's post edited 1 time (meeting_status ENDED, button none):" in said
    assert "| :video_camera: **Sprint review** \u00b7 Meeting ended \u00b7 25 min \u00b7 2 people" in said
    assert "Slack: the bot's post edited 1 time (buttons none):" in said
    assert "| *Design sync* \u00b7 Meeting ended \u00b7 20 min \u00b7 3 people" in said

    said = "\n".join(clicked)
    stranger, creator = said.split("bob (U0LOCALBOB1) clicks End room")[1].split("anna.petrova (U0LOCALUSER) clicks")
    assert "(for bob only):\n     | Only the person who started *Retro* can end it." in stranger
    assert "still open; the message unchanged" in stranger and "deleted" not in stranger
    assert re.search(r"room /retro-\S+ deleted", creator)
    assert "edited (buttons none):\n     | :white_check_mark: The Whereby room *Retro* has ended" in creator

    said = "\n".join(ended)
    assert "The Whereby room **Sprint review** has ended" in said and "*Design sync* has ended" in said
    assert said.count(" deleted") == 2 and "no room left" in said
    assert not re.search(r"roomKey=[\w-]{7}", "\n".join([*mattermost, *slack, *clicked])), "a host key in full"


def test_make_demo_shows_a_recurring_meeting_fired_by_the_schedulers_stand_in_and_posted_by_the_bot(demo):
    recurring = "\n".join(list(steps_of(demo).values())[11])
    assert re.search(r"Scheduler \(local stand-in, clock moved 3 min ahead\): schedule [a-z2-7]{8} fired", recurring)
    assert "Mattermost: the bot's post in channel fukxanjgjbnp7ng383at53k1sy:" in recurring
    assert "| :video_camera: **Standup** \u00b7 [Join the Whereby room](" in recurring
