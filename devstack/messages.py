"""The message catalogue: extract the sentences from the layer, merge them into each language, compile.

    python -m devstack.messages           # extract, merge, compile; then list what is left to translate
    python -m devstack.messages --check   # change nothing; exit 1 when a sentence is untranslated or stale
    python -m devstack.messages --add de  # start a new language's catalogue (then add it to LANGUAGES)

``make messages`` runs the first. Sentences are found in ``Speech.t("…")``, ``Speech.nt("…", "…", n)`` and
``N_("…")`` calls. The ``.po`` files are what translators edit; the ``.mo`` files are what the functions read, and
are committed so that a ``sam build`` needs no compile step. Locations are left out of the files on purpose: a line
moved in the code must not change every catalogue.
"""

from __future__ import annotations

import argparse
import io
import string
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
# `make mutation` runs the tests in `.mutation/mutants/`, whose `bridge/` holds every mutant's text: the catalogue is
# checked against the stage's link to the layer itself, one folder up.
LAYER = next(path for path in (ROOT / "layers" / "shared" / "bridge", ROOT.parent / "bridge") if path.is_dir())
LOCALE_DIR = LAYER / "core" / "locale"
DOMAIN = "bridge"
TEMPLATE = LOCALE_DIR / f"{DOMAIN}.pot"
KEYWORDS = {"t": None, "nt": (1, 2), "N_": None}
# A fixed date in the files' headers: a run that changes no sentence changes no byte.
STAMP = datetime(2026, 1, 1)
HEADER = "The sentences of whereby-bridge's chat answers, posts, buttons and Kommo notes."


def translated_languages() -> list[str]:
    """Every language with a catalogue (English is the message ids themselves)."""
    return sorted(path.name for path in LOCALE_DIR.iterdir() if (path / "LC_MESSAGES" / f"{DOMAIN}.po").exists())


def po_path(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"


def extract() -> Catalog:
    """Every sentence the layer says, as a template catalogue."""
    catalog = Catalog(project="whereby-bridge", header_comment=f"# {HEADER}", creation_date=STAMP, fuzzy=False)
    for _file, _line, message, _comments, _context in extract_from_dir(
        LAYER, method_map=[("**.py", "python")], keywords=KEYWORDS, strip_comment_tags=True
    ):
        catalog.add(message)
    return catalog


def placeholders(text: str) -> set[str]:
    """The ``{names}`` in a sentence; a sentence that is no format string has none."""
    try:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError:
        return {"<unbalanced braces>"}


def problems(template: Catalog, language: str, catalog: Catalog) -> Iterator[str]:
    """What is wrong with one language's catalogue against the template."""
    for message in template:
        if not message.id:
            continue
        found = catalog.get(message.id)
        if found is None:
            yield f"{language}: missing {message.id!r}"
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        texts = found.string if isinstance(found.string, tuple) else (found.string,)
        if not all(texts) or found.fuzzy:
            yield f"{language}: not translated {ids[0]!r}"
            continue
        wanted = set().union(*(placeholders(i) for i in ids)) - {"n"}
        for text in texts:
            have = placeholders(text) - {"n"}
            if have != wanted:
                yield f"{language}: placeholders {sorted(have)} instead of {sorted(wanted)} in {ids[0]!r}"
    for message in catalog:
        if message.id and template.get(message.id) is None:
            yield f"{language}: no longer said {message.id!r}"


def read(path: Path, language: str) -> Catalog:
    with path.open("rb") as file:
        return read_po(file, locale=language, domain=DOMAIN)


def po_bytes(catalog: Catalog) -> bytes:
    out = io.BytesIO()
    write_po(out, catalog, omit_header=False, no_location=True, sort_output=True, width=120)
    return out.getvalue()


def mo_bytes(catalog: Catalog) -> bytes:
    out = io.BytesIO()
    write_mo(out, catalog, use_fuzzy=False)
    return out.getvalue()


def merged(template: Catalog, catalog: Catalog) -> Catalog:
    catalog.update(template, no_fuzzy_matching=True, update_creation_date=False)
    catalog.obsolete.clear()  # a sentence no longer said is dropped, not kept commented out
    catalog.revision_date = STAMP
    catalog.fuzzy = False
    return catalog


def stale() -> list[str]:
    """Everything ``make messages`` would change or still needs a translator for; empty when all is current."""
    template = extract()
    found: list[str] = []
    if not TEMPLATE.exists() or TEMPLATE.read_bytes() != po_bytes(template):
        found.append(f"{TEMPLATE.relative_to(ROOT)} is not what the code says: run make messages")
    for language in translated_languages():
        catalog = read(po_path(language), language)
        found += list(problems(template, language, catalog))
        mo = po_path(language).with_suffix(".mo")
        if not mo.exists() or mo.read_bytes() != mo_bytes(catalog):
            found.append(f"{mo.relative_to(ROOT)} is not compiled from its .po: run make messages")
    return found


def update() -> list[str]:
    template = extract()
    LOCALE_DIR.mkdir(parents=True, exist_ok=True)
    TEMPLATE.write_bytes(po_bytes(template))
    left: list[str] = []
    for language in translated_languages():
        catalog = merged(template, read(po_path(language), language))
        po_path(language).write_bytes(po_bytes(catalog))
        catalog = read(po_path(language), language)
        po_path(language).with_suffix(".mo").write_bytes(mo_bytes(catalog))
        left += list(problems(template, language, catalog))
    return left


def add(language: str) -> None:
    path = po_path(language)
    if path.exists():
        raise SystemExit(f"{path.relative_to(ROOT)} exists already")
    catalog = Catalog(locale=language, domain=DOMAIN, project="whereby-bridge", creation_date=STAMP, fuzzy=False)
    catalog.header_comment = f"# {HEADER}"
    path.parent.mkdir(parents=True)
    path.write_bytes(po_bytes(merged(extract(), catalog)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; fail when anything is stale")
    parser.add_argument("--add", metavar="LANGUAGE", help="start a catalogue for this language (e.g. de, pt_PT)")
    args = parser.parse_args()
    if args.add:
        add(args.add)
    found = stale() if args.check else update()
    for line in found:
        print(line)
    if found:
        print(f"{len(found)} to do: translate in {LOCALE_DIR.relative_to(ROOT)}/<language>/LC_MESSAGES/{DOMAIN}.po")
        return 1
    print(f"The catalogue is complete: {len(extract())} sentences in {', '.join(['en', *translated_languages()])}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
