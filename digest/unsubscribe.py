"""Unsubscribe over HTTP, framework-free: the daemon's web endpoint calls `handle`.

GET only shows a page with a button (mail scanners follow links; they must not unsubscribe
anyone); POST — the RFC 8058 one-click request from the mail client, or the button — does it.
"""
from __future__ import annotations

from digest.i18n import tr
from digest.render import render_page
from digest.settings import DigestSettings
from digest.tokens import verify_token

HTML = "text/html; charset=utf-8"


def handle(method: str, token: str, store, settings: DigestSettings, lang: str = "en") -> tuple[int, str, bytes]:
    """`lang`: the visitor's (Accept-Language) until the link names a subscriber, then theirs."""
    def email_of(subscriber_id: int):
        subscriber = store.get_subscriber(subscriber_id)
        return subscriber.email if subscriber else None

    subscriber_id = verify_token(token, settings.secret, store.get_subscriber)
    if subscriber_id is None:
        page = render_page(tr(lang, "Link not valid"), tr(lang, "This unsubscribe link is not valid. Use the link in your "
                                                                "latest email."), None, settings, lang)
        return 403, HTML, page.encode()
    subscriber = store.get_subscriber(subscriber_id)
    lang = getattr(subscriber, "lang", None) or lang
    if method == "GET":
        page = render_page(tr(lang, "Unsubscribe?"), tr(lang, "Stop the %(site)s digest for %(email)s?",
                                                        site=settings.site_name, email=email_of(subscriber_id)),
                           token, settings, lang)
        return 200, HTML, page.encode()
    if method == "POST":
        store.unsubscribe(subscriber_id)
        page = render_page(tr(lang, "Unsubscribed"), tr(lang, "%(email)s will get no more %(site)s emails.",
                                                        email=email_of(subscriber_id), site=settings.site_name),
                           None, settings, lang)
        return 200, HTML, page.encode()
    return 405, "text/plain", b"method not allowed\n"
