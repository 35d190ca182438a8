"""The subscriber's language: English (the strings in the code and templates) or Korean.

Catalogues are gettext .po files in digest/locale/<lang>/LC_MESSAGES/messages.po, read at run
time with Babel (read_po, compiled in memory once per process): `pip install -e .` is enough, no
build step. After changing a string, extract and merge (README):

    pybabel extract -F digest/babel.cfg -k tr:2 -k ntr:2,3 -k t -k N_ --no-location -o digest/locale/messages.pot digest postwatch
    pybabel update -i digest/locale/messages.pot -d digest/locale
"""
from __future__ import annotations

import io
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from babel.dates import format_date
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

LANGUAGES = ("en", "ko")
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
# A date as each language writes it: "2 November 2026", "2026년 11월 2일".
DATE_FORMATS = {"en": "d MMMM y", "ko": "long"}


def language(lang: str | None) -> str:
    return lang if lang in LANGUAGES else "en"


@lru_cache(maxsize=None)
def translations(lang: str | None) -> NullTranslations:
    """The gettext translations of `lang` (English: the strings as written)."""
    lang = language(lang)
    path = LOCALE_DIR / lang / "LC_MESSAGES" / "messages.po"
    if lang == "en" or not path.exists():
        return NullTranslations()
    with path.open("rb") as source:
        catalog = read_po(source, locale=lang)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(fp=compiled)


def N_(message: str) -> str:
    """Marks a string for pybabel where it is defined; translated where it is shown."""
    return message


def tr(lang: str | None, message: str, **values) -> str:
    """`message` in `lang`, with its %(name)s values filled in."""
    text = translations(lang).gettext(message)
    return text % values if values else text


def ntr(lang: str | None, singular: str, plural: str, n: int, **values) -> str:
    """The singular or plural form for `n` in `lang` (%(num)d is `n`)."""
    return translations(lang).ngettext(singular, plural, n) % {"num": n, **values}


def date_text(value: datetime, lang: str | None) -> str:
    lang = language(lang)
    return format_date(value, DATE_FORMATS[lang], locale=lang)


def accepted_language(header: str | None) -> str:
    """The first language of an Accept-Language header that is one of LANGUAGES, else "en"."""
    ranked = []
    for index, part in enumerate((header or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        ranked.append((-quality, index, tag.strip().lower().split("-")[0]))
    for _, _, tag in sorted(ranked):
        if tag in LANGUAGES:
            return tag
    return "en"
