"""Signing up and changing one's preferences: what the /subscribe, /confirm and /preferences pages
do, without the web framework (postwatch/web.py calls these in its database threads).

Each function is handed what it uses (the config, the store, the mailer for the digest settings
its messages are rendered with); library errors are raised, never printed. Double opt-in: `sign_up` stores a pending signup and queues the confirmation email
in the outbox, the same exactly-once path as digests; `confirm` makes the subscriber active.
"""
from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import available_timezones

from postwatch.config import CADENCES, WEEKDAYS
from digest.i18n import LANGUAGES, N_, language, tr
from postwatch.subscribers import describe_cadence, normalized_email, schedule_options
from state import Subscriber
from state.consent import NEW, RETURNING

if TYPE_CHECKING:
    from digest.settings import DigestSettings
    from postwatch.config import Config
    from postwatch.mailer import Mailer
    from state import Store

log = logging.getLogger("postwatch.signup")

CADENCE_LABELS = {"immediate": "After each check (as soon as something changes)", "daily": "Daily",
                  "weekly": "Weekly"}
WEEKDAY_LABELS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# Each language by its own name, as the form offers them.
LANGUAGE_NAMES = {"en": "English", "ko": "한국어"}
# The answer to every signup, whatever the address's state: it tells nobody who is subscribed.
CHECK_INBOX = (N_("Check your inbox"), N_("If that address can receive our email, a message with a link to confirm "
                                          "your subscription is on its way. Nothing else is sent to it until the link is "
                                          "followed."))


def check_inbox(lang: str = "en") -> tuple[str, str]:
    return tr(lang, CHECK_INBOX[0]), tr(lang, CHECK_INBOX[1])


def _labels(lang: str) -> tuple[dict, tuple]:
    """The cadences' and weekdays' labels in `lang` (the strings above, listed for pybabel)."""
    cadences = {"immediate": tr(lang, "After each check (as soon as something changes)"), "daily": tr(lang, "Daily"),
                "weekly": tr(lang, "Weekly")}
    days = (tr(lang, "Monday"), tr(lang, "Tuesday"), tr(lang, "Wednesday"), tr(lang, "Thursday"), tr(lang, "Friday"),
            tr(lang, "Saturday"), tr(lang, "Sunday"))
    return cadences, days
ZONES = sorted(z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/"))) + ["UTC"]


@dataclass
class SettingsForm:
    """What the signup or preferences form holds, as typed (to show again) and checked."""
    email: str = ""
    cadence: str = "daily"
    at: str = "08:00"
    tz: str = "UTC"
    day: str = "mon"
    sources: list[str] | None = None        # None: every source (and those added later)
    lang: str = "en"
    errors: list[str] = field(default_factory=list)
    options: dict | None = None             # keyword arguments of the store, when valid


def defaults(config, subscriber: Subscriber | None = None, lang: str = "en") -> SettingsForm:
    """The form as first shown: the subscriber's settings, else the [digest] defaults and `lang`
    (the visitor's Accept-Language)."""
    if subscriber is not None:
        return SettingsForm(email=subscriber.email, cadence=subscriber.cadence, at=subscriber.send_time,
                            tz=subscriber.timezone, day=WEEKDAYS[subscriber.weekday or 0], sources=subscriber.sources,
                            lang=language(subscriber.lang))
    digest = config.digest
    return SettingsForm(cadence=digest.default_cadence, at=digest.default_time, tz=digest.default_timezone,
                        day=WEEKDAYS[digest.default_weekday], lang=language(lang))


def read_form(config, form: Mapping, known_sources: list[str], *, with_email: bool) -> SettingsForm:
    """The form's fields checked: `options` set when they are valid, else `errors` (one line each)."""
    def one(name: str) -> str:
        return str(form.get(name) or "").strip()[:320]

    chosen = [str(value) for value in form.getall("source", [])] if hasattr(form, "getall") else list(form.get("source") or [])
    lang = one("lang") if one("lang") in LANGUAGES else "en"
    checked = SettingsForm(email=one("email"), cadence=one("cadence"), at=one("at"), tz=one("tz"), day=one("day") or "mon",
                           sources=chosen, lang=lang)
    if with_email:
        try:
            checked.email = normalized_email(checked.email)
        except ValueError:
            checked.errors.append(tr(lang, "Enter your email address, like name@example.org."))
    unknown = [name for name in chosen if name not in known_sources]
    if known_sources and (unknown or not chosen):
        checked.errors.append(tr(lang, "Choose at least one of the sources listed."))
    # Every source ticked: every source, including those added later.
    sources = None if set(chosen) >= set(known_sources) else chosen
    try:
        checked.options = schedule_options(config, checked.cadence or None, checked.at or None, checked.tz or None,
                                           checked.day, sources)
    except ValueError as exc:
        checked.errors.append(f"{str(exc)[0].upper()}{str(exc)[1:]}.")
    if checked.errors:
        checked.options = None
    else:
        checked.options.setdefault("weekday", None)     # only a weekly digest has a day
        checked.options["lang"] = lang
    checked.sources = sources
    return checked


def page_context(store: Store, form: SettingsForm, lang: str = "en") -> dict:
    """What the settings fields of a page need: the choices and what is chosen, labelled in `lang`."""
    sources = store.list_sources()
    cadences, days = _labels(lang)
    return {"form": form, "cadences": [(c, cadences[c]) for c in CADENCES],
            "languages": list(LANGUAGE_NAMES.items()),
            "weekdays": list(zip(WEEKDAYS, days)), "zones": ZONES if form.tz in ZONES else [form.tz, *ZONES],
            "sources": [{"name": s.name, "title": s.title or s.name, "checked": form.sources is None or s.name in form.sources}
                        for s in sources],
            "errors": form.errors}


# Providers known to ignore the dots of a local part (and googlemail.com is gmail.com).
DOTLESS_DOMAINS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}


def mailbox_key(email: str) -> str:
    """The mailbox an address reaches, for counting signups only (what is stored and mailed
    stays as typed): lower case, no +tag, and no dots at the providers that ignore them."""
    local, _, domain = email.strip().lower().rpartition("@")
    local = local.split("+", 1)[0] or local
    if domain in DOTLESS_DOMAINS:
        local, domain = local.replace(".", ""), DOTLESS_DOMAINS[domain]
    return f"{local}@{domain}"


def client_network(remote: str) -> str:
    """The network a client's address is counted in: its IPv4 /24, or its IPv6 /64 (a single
    host is routinely given a whole /64). An IPv4 client of a dual-stack listener counts as
    IPv4. Anything that is no address (a Unix socket) is its own key."""
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return remote
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def known_sources(store: Store) -> list[str]:
    return [s.name for s in store.list_sources()]


def confirm_link(config: Config, subscriber: Subscriber) -> tuple[str, datetime]:
    from digest.tokens import make_confirm_token

    expires = subscriber.signup_at + config.signup.confirm_within
    token = make_confirm_token(subscriber, config.unsubscribe_secret(), expires)
    return f"{config.page_url('/confirm')}?token={token}", expires


def queue_confirmation(config: Config, store: Store, settings: DigestSettings, subscriber: Subscriber, now: datetime,
                       *, reminder: bool = False) -> int:
    """The confirmation email (or its one reminder) into the outbox; sent by the next flush."""
    from digest.compose import build_confirmation

    url, expires = confirm_link(config, subscriber)
    message = build_confirmation(subscriber, url, expires, describe_cadence(subscriber, subscriber.lang), settings, now,
                                 reminder=reminder)
    return store.enqueue_message(message, now, subscriber_id=subscriber.id)


def sign_up(config: Config, store: Store, mailer: Mailer, form: SettingsForm, now: datetime) -> str:
    """Store the signup and queue its confirmation when one is due; the outcome (state.consent)."""
    request = store.request_signup(form.email, now=now, confirm_within=config.signup.confirm_within, **form.options)
    if request.outcome in (NEW, RETURNING) and request.confirm is not None:
        queue_confirmation(config, store, mailer.digest_settings(), request.confirm, now)
    log.info("signup: %s (%s)", "confirmation queued" if request.confirm else "nothing sent", request.outcome)
    return request.outcome


def remind_and_expire(config: Config, store: Store, mailer: Mailer, now: datetime) -> dict[str, int]:
    """Housekeeping: one reminder to signups waiting for `[signup] remind_after`, and the
    signups older than `confirm_within` forgotten."""
    signup = config.signup
    reminded = 0
    settings = None
    for subscriber in store.claim_reminders(now, signup.remind_after, signup.confirm_within):
        settings = settings or mailer.digest_settings()
        queue_confirmation(config, store, settings, subscriber, now, reminder=True)
        reminded += 1
    expired = store.expire_signups(now, signup.confirm_within)
    return {"reminded": reminded, "expired": expired}
