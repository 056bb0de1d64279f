"""What a user types after /whereby → one command; the room name never carries what identifies a person."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.chat.grammar import (
    DEFAULT_TOPIC,
    MAX_TOPIC_CHARS,
    EndRoom,
    Invalid,
    Limits,
    ListRooms,
    ShowHelp,
    StartRoom,
    duration_minutes,
    literal,
    parse,
    room_key_in,
)
from bridge.chat.mattermost import prefix_for
from bridge.whereby.client import PREFIX_MAX, ROOM_KEY_PATTERN

LIMITS = Limits(default_minutes=60, max_minutes=480)
KEY = "zabcdefghij"
VALID_PREFIX = re.compile(r"[a-z0-9-]{1,38}")


@pytest.mark.parametrize(
    ("word", "minutes"),
    [("30m", 30), ("2h", 120), ("1h30m", 90), ("1H30M", 90), ("90m", 90), ("0h45m", 45)],
)
def test_durations_are_read_from_the_last_word(word, minutes):
    assert parse(f"Standup {word}", LIMITS) == StartRoom("Standup", minutes, slug_source="Standup")


@pytest.mark.parametrize("word", ["90", "h", "m", "30 m", "30min", "10ms", "2d", "(45m)"])
def test_words_that_are_not_durations_stay_in_the_topic(word):
    command = parse(f"Sprint {word}", LIMITS)
    assert isinstance(command, StartRoom)
    assert command.minutes == 60
    assert command.topic == f"Sprint {word}"


@pytest.mark.parametrize("word", ["\u0663\u0660m", "\uff13\uff10m", "\u0968h"])  # Arabic-Indic, full-width, Devanagari
def test_digits_of_other_scripts_are_not_a_duration(word):
    command = parse(f"Sprint {word}", LIMITS)
    assert isinstance(command, StartRoom)
    assert command.minutes == 60 and command.topic == f"Sprint {word}"


@pytest.mark.parametrize(
    "word", ["99999h", "1h-5m", "-5m", "+45m", "1.5h", "1,5h", ".5h", "0m", "0h0m", "90000m", "1h30", "1h30m15m", "9h"]
)
def test_a_malformed_or_out_of_range_duration_is_refused_with_the_range_and_an_example(word):
    command = parse(f"Review {word}", LIMITS, trigger="/meet")
    assert isinstance(command, Invalid)
    assert "at least 5 minutes and at most 8 h" in command.problem
    assert "for example `/meet Review 1h30m`" in command.problem


def test_the_example_duration_is_within_a_small_configured_maximum():
    command = parse("Review 2h", Limits(default_minutes=30, max_minutes=45))
    assert isinstance(command, Invalid)
    assert "at most 45 min" in command.problem and "for example `/whereby Review 45m`" in command.problem


def test_the_example_duration_of_a_whole_hour_maximum_has_no_minutes_part():
    command = parse("Review 2h", Limits(default_minutes=30, max_minutes=60))
    assert isinstance(command, Invalid)
    assert "for example `/whereby Review 1h`." in command.problem


def test_a_long_refused_duration_is_quoted_back_clipped_to_40_characters():
    word = "1h" + "5" * 60 + "m"
    command = parse(f"Review {word}", LIMITS)
    assert isinstance(command, Invalid)
    assert command.problem.startswith(f"“{word[:39]}…” is not a duration")


def test_a_refused_duration_is_quoted_back_as_plain_text():
    command = parse("Review 1h-5m", LIMITS)
    assert isinstance(command, Invalid)
    assert "“1h\\-5m”" in command.problem  # the dash escaped: it cannot start a list or a rule


def test_a_bare_number_is_part_of_the_topic_not_minutes():
    assert parse("Sprint 42", LIMITS) == StartRoom("Sprint 42", 60, slug_source="Sprint 42")


def test_empty_or_blank_text_starts_a_default_room():
    for text in ("", "   ", "\n\t \n"):
        assert parse(text, LIMITS) == StartRoom(DEFAULT_TOPIC, 60)


def test_a_duration_alone_keeps_the_default_topic():
    assert parse("45m", LIMITS) == StartRoom(DEFAULT_TOPIC, 45)


def test_extra_spaces_and_newlines_are_one_separator():
    command = parse("  Weekly \n\n  sync   \t 2h  \n", LIMITS)
    assert command == StartRoom("Weekly sync", 120, slug_source="Weekly sync")


@pytest.mark.parametrize("text", ["Review 9h", "Review 481m", "Review 9999h", "Review 8h1m"])
def test_a_duration_over_the_maximum_is_refused_naming_the_maximum(text):
    command = parse(text, LIMITS)
    assert isinstance(command, Invalid)
    assert "at most 8 h" in command.problem


@pytest.mark.parametrize("text", ["Review 0m", "Review 0h", "Review 4m"])
def test_a_zero_or_too_short_duration_is_refused(text):
    command = parse(text, LIMITS)
    assert isinstance(command, Invalid)
    assert "at least 5 minutes" in command.problem


def test_the_maximum_comes_from_configuration():
    assert "at most 1 h 30 min" in parse("x 2h", Limits(30, 90)).problem  # type: ignore[union-attr]
    assert parse("x", Limits(30, 90)) == StartRoom("x", 30, slug_source="x")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("help", ShowHelp()),
        ("HELP", ShowHelp()),
        ("Help me", ShowHelp()),
        ("list", ListRooms()),
        ("LiSt", ListRooms()),
        ("end", EndRoom()),
        ("END", EndRoom()),
        (f"End x-{KEY}-1b2c", EndRoom(room_key=KEY, reference=f"x-{KEY}-1b2c")),
    ],
)
def test_subcommands_are_case_insensitive(text, expected):
    assert parse(text, LIMITS) == expected


def test_start_lets_a_topic_begin_with_a_subcommand_word():
    assert parse("start End of sprint 30m", LIMITS) == StartRoom("End of sprint", 30, slug_source="End of sprint")
    assert parse("START", LIMITS) == StartRoom(DEFAULT_TOPIC, 60)


@pytest.mark.parametrize("text", ["list everything", "end of the sprint party", "end not-a-room"])
def test_a_subcommand_with_unexpected_words_gets_a_hint_not_a_room(text):
    command = parse(text, LIMITS, trigger="/meet")
    assert isinstance(command, Invalid)
    assert "/meet" in command.problem


def test_mentions_are_taken_out_of_the_topic_and_kept_for_the_post():
    members = {"alice", "bob.smith", "carol", "dave"}
    command = parse("Design review @alice (@Bob.Smith) **@carol** 45m @dave", LIMITS, members=members)
    assert command == StartRoom(
        topic="Design review",
        minutes=45,
        mentions=("@alice", "@bob.smith", "@carol", "@dave"),
        slug_source="Design review",
    )


def test_the_same_mention_twice_is_echoed_once():
    assert parse("Sync @alice @alice", LIMITS, members={"alice"}).mentions == ("@alice",)  # type: ignore[union-attr]


def test_only_users_mattermost_resolved_are_invited():
    command = parse("Sync @alice @nobody @channel @ALL (@here) 30m", LIMITS, members={"alice", "carol"})
    assert command == StartRoom(
        topic="Sync",
        minutes=30,
        mentions=("@alice",),  # a listed user nobody typed here is not invited
        slug_source="Sync",
        not_invited=("@nobody", "@channel", "@all", "@here"),
    )


def test_channel_wide_names_are_never_invited_even_when_listed_as_users():
    command = parse("All hands @channel @all @here", LIMITS, members={"channel", "all", "here"})
    assert isinstance(command, StartRoom)
    assert command.mentions == () and command.not_invited == ("@channel", "@all", "@here")


def test_a_mention_typed_with_trailing_punctuation_invites_the_user_mattermost_resolved():
    command = parse("Sync @alice_ @bob-- @carol.", LIMITS, members={"alice", "bob", "carol"})
    assert command.mentions == ("@alice", "@bob", "@carol")  # type: ignore[union-attr]


def test_channels_emails_and_urls_never_reach_the_room_name():
    text = "Q3 ~town-square alice@example.com https://docs.example.com/q3 www.example.org drive.example.com/x plan"
    command = parse(text, LIMITS)
    assert isinstance(command, StartRoom)
    assert command.slug_source == "Q3 plan"
    assert command.topic == text  # shown in full to the channel: it is what the caller typed there


def test_non_ascii_topics_are_kept_as_typed():
    assert parse("Планёрка команды 🚀 30m", LIMITS) == StartRoom(
        "Планёрка команды 🚀", 30, slug_source="Планёрка команды 🚀"
    )


def test_a_huge_topic_is_clipped_for_the_post():
    command = parse("word " * 2000, LIMITS)
    assert isinstance(command, StartRoom)
    assert len(command.topic) == MAX_TOPIC_CHARS and command.topic.endswith("…")


@pytest.mark.parametrize(
    "reference",
    [
        f"standup-{KEY}-4968c61f-fcbe-4d8f-be30-45585af8e0f3",
        f"/standup-{KEY}-4968c61f-fcbe-4d8f-be30-45585af8e0f3",
        f"https://example.whereby.com/standup-{KEY}-4968c61f-fcbe-4d8f-be30-45585af8e0f3",
        f"<https://example.whereby.com/standup-{KEY}-4968c61f-fcbe-4d8f-be30-45585af8e0f3>",
        f"https://example.whereby.com/standup-{KEY}-4968c61f-fcbe-4d8f-be30-45585af8e0f3?roomKey=z-zzzzzzzzzz-q",
        f"example.whereby.com/STANDUP-{KEY.upper()}-4968c61f",
        f"{KEY}-4968c61f",
        KEY,
        f"zillionaire-{KEY}-4968c61f",  # a topic word shaped like a key comes first; ours is the last one
        # A link pasted without its scheme: what follows the path names no room, even when it is shaped like a key.
        f"example.whereby.com/standup-{KEY}-4968c61f?roomKey=x/zzzzzzzzzzz",
        f"example.whereby.com/standup-{KEY}-4968c61f#x/zzzzzzzzzzz",
    ],
)
def test_a_room_is_found_by_its_name_or_link(reference):
    assert room_key_in(reference) == KEY


def test_a_long_reference_that_names_no_room_is_quoted_back_clipped_to_80_characters():
    reference = "sprint" * 20
    command = parse(f"end {reference}", LIMITS)
    assert isinstance(command, Invalid)
    assert command.problem == (
        f"“{reference[:79]}…” is not the name or link of a room made with /whereby."
        " `/whereby list` shows the rooms of this channel."
    )


@pytest.mark.parametrize("reference", ["standup", "https://example.whereby.com/", "zabc", "xzabcdefghij-1"])
def test_a_reference_without_our_key_names_no_room(reference):
    assert room_key_in(reference) is None


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("Design review", f"design-review-{KEY}-"),
        ("", f"meeting-{KEY}-"),
        ("Планёрка 🚀", f"meeting-{KEY}-"),
        ("🎉 Launch party", f"launch-party-{KEY}-"),
        ("Zillionaire pitch", f"zillionaire-pitch-{KEY}-"),  # a z-word is never taken for the key
    ],
)
def test_room_name_prefixes(source, expected):
    assert prefix_for(source, KEY) == expected


@given(st.text(max_size=400))
def test_any_text_parses_and_any_room_name_is_valid_and_ours(text):
    command = parse(text, LIMITS)
    assert isinstance(command, StartRoom | ShowHelp | ListRooms | EndRoom | Invalid)
    if isinstance(command, StartRoom):
        assert 5 <= command.minutes <= 480
        assert "@" not in command.slug_source
        prefix = prefix_for(command.slug_source, KEY)
        assert VALID_PREFIX.fullmatch(prefix) and len(prefix) <= PREFIX_MAX
        room_name = prefix + "6b44cf4f-dafc-46a4-b455-e8368c7faf6c"  # Whereby appends a uuid to the prefix
        assert ROOM_KEY_PATTERN.search(room_name).group(1) == KEY  # type: ignore[union-attr]


@given(
    st.from_regex(
        r"[+-]?[0-9]{1,7}([.,][0-9]{0,2})?[hHmM]([+-]?[0-9]{1,7}([.,][0-9]{0,2})?[hHmM]){0,2}[0-9]{0,3}", fullmatch=True
    )
)
def test_any_duration_shaped_word_is_a_room_or_a_hint(word):
    command = parse(f"Call {word}", LIMITS)
    minutes = duration_minutes(word)
    if minutes is not None and 5 <= minutes <= 480:
        assert command == StartRoom("Call", minutes, slug_source="Call")
    else:  # never swallowed into the topic
        assert isinstance(command, Invalid) and "at least 5 minutes and at most 8 h" in command.problem


def test_a_huge_word_is_parsed_like_any_other_and_stays_out_of_the_room_name():
    # The URL check reads a word's first 256 characters: over all of "a.a.a…" it took 13 s for 30,000 characters.
    command = parse("Review " + "a." * 15_000 + " www.example.com/x" + " 30m", LIMITS)
    assert isinstance(command, StartRoom)
    assert command.minutes == 30
    assert "example" not in command.slug_source and len(command.topic) <= 500


@given(st.text(alphabet="\\*_`~ab1 ", max_size=40))
def test_emphasis_and_code_marks_typed_in_a_topic_stay_literal(text):
    # In Markdown a mark is literal only after an odd run of backslashes: an even run escapes itself, and the mark
    # after it would open emphasis, strike-through or code (a typed `\*x\*` must not show "x" in italics).
    shown = literal(text)
    for index, char in enumerate(shown):
        if char in "*_`~":
            run = len(shown[:index]) - len(shown[:index].rstrip("\\"))
            assert run % 2 == 1, (text, shown)
