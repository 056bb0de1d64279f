"""The message catalogue: every sentence in every language, the same placeholders, and whose language is spoken."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.config import settings_from
from bridge.core.i18n import LANGUAGES, Speech, language_of, speech
from devstack import messages


def test_every_sentence_the_code_says_is_translated_in_every_language_and_compiled() -> None:
    # What `make messages --check` says: the template is the code's sentences, every language has each one (no
    # fuzzy, no empty, no stale), with the same placeholders, and the .mo files the functions read are current.
    assert messages.stale() == []
    assert messages.translated_languages() == sorted(set(LANGUAGES) - {"en"})


def test_a_translation_that_loses_or_invents_a_placeholder_is_caught() -> None:
    template = Catalog()
    template.add("Room {name} ends at {time}.")
    template.add(("{n} person", "{n} people"))
    wrong = Catalog(locale="ru")
    wrong.add("Room {name} ends at {time}.", "Комната {name} закрывается в {tiem}.")
    wrong.add(("{n} person", "{n} people"), ("{n} человек", "{n} человека", ""))

    found = list(messages.problems(template, "ru", wrong))

    assert any("placeholders ['name', 'tiem'] instead of ['name', 'time']" in line for line in found)
    assert any("not translated '{n} person'" in line for line in found)


def test_a_sentence_missing_from_a_language_or_no_longer_said_is_caught() -> None:
    template = Catalog()
    template.add("The meeting ended.")
    old = Catalog(locale="es")
    old.add("A sentence the code no longer says.", "Una frase que ya no se dice.")

    found = list(messages.problems(template, "es", old))

    assert "es: missing 'The meeting ended.'" in found
    assert "es: no longer said 'A sentence the code no longer says.'" in found


def test_durations_and_counts_read_naturally_in_each_language() -> None:
    assert speech("en").minutes(90) == "1 h 30 min"
    assert speech("ru").minutes(90) == "1 ч 30 мин"
    assert speech("es").minutes(45) == "45 min"
    assert speech("en").number(12345) == "12,345"
    assert speech("es").number(12345) == "12.345"
    assert speech("ru").number(12345) == "12\xa0345"


def test_platform_locales_map_onto_the_catalogue_and_anything_else_falls_back() -> None:
    # Mattermost says "pt-BR" or "es", Slack "es-LA" or "ru-RU", Kommo "ru" or "pt".
    assert language_of("pt-BR") == "pt_BR"
    assert language_of("pt") == "pt_BR"
    assert language_of("es-LA") == "es"
    assert language_of("ES") == "es"
    assert language_of("ru_RU") == "ru"
    assert language_of("en-GB") == "en"
    assert language_of("de", "es") == "es"
    assert language_of("zh-TW", "ru") == "ru"
    assert language_of("", "pt_BR") == "pt_BR"
    assert language_of(None, "es") == "es"


@given(st.one_of(st.text(max_size=20), st.none(), st.integers()), st.sampled_from(LANGUAGES))
def test_whatever_a_platform_says_the_language_is_one_the_catalogue_has(tag: object, default: str) -> None:
    assert language_of(tag, default) in LANGUAGES


def test_an_unknown_language_speaks_the_default_instead_of_failing() -> None:
    assert Speech("de").language == "en"
    assert Speech("de").t("{n} min", n=5) == "5 min"


def test_the_language_parameter_is_read_and_a_bad_one_stops_what_speaks_naming_it() -> None:
    assert settings_from({"TABLE_NAME": "t"}).language == "en"
    assert settings_from({"TABLE_NAME": "t", "DEFAULT_LANGUAGE": "pt-BR"}).language == "pt_BR"

    bad = settings_from({"TABLE_NAME": "t", "DEFAULT_LANGUAGE": "klingon"})

    assert bad.language == "en"
    assert set(bad.problems) == {"kommo", "mattermost", "slack"}
    assert "Language (DEFAULT_LANGUAGE) is 'klingon'" in bad.problems["slack"]


def test_a_meetings_day_and_time_reads_as_each_language_writes_it_without_loading_babel() -> None:
    # The catalogue's short names and order are CLDR's (what Babel would write), checked over a year of dates; and
    # writing one loads no Babel, whose import and locale data would cost a worker's cold start about 0.15x.
    from datetime import datetime, timedelta

    from babel.dates import format_skeleton

    for language in ("es", "pt_BR", "ru"):
        for days in range(0, 366, 5):
            moment = datetime(2026, 1, 1, 14, 30) + timedelta(days=days)
            cldr = format_skeleton("MMMEd", moment, locale=language)
            assert speech(language).day_and_time(moment) == f"{cldr}, 14:30"
    assert speech("en").day_and_time(datetime(2026, 12, 4, 14, 0)) == "Fri 4 Dec, 14:00"

    code = (
        "import sys; from datetime import datetime; from bridge.core.i18n import speech;"
        " print(speech('ru').day_and_time(datetime(2026, 12, 4, 14, 0)),"
        " any(m.startswith('babel') for m in sys.modules))"
    )
    layer = str(Path(__file__).resolve().parents[2] / "layers" / "shared")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": layer}, check=True
    )
    assert out.stdout.strip() == "пт, 4 дек., 14:00 False"
