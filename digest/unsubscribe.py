"""Unsubscribe over HTTP, framework-free: the daemon's web endpoint calls `handle`.

GET only shows a page with a button (mail scanners follow links; they must not unsubscribe
anyone); POST — the RFC 8058 one-click request from the mail client, or the button — does it.
"""
from __future__ import annotations

from digest.render import render_page
from digest.settings import DigestSettings
from digest.tokens import verify_token

HTML = "text/html; charset=utf-8"


def handle(method: str, token: str, store, settings: DigestSettings) -> tuple[int, str, bytes]:
    def email_of(subscriber_id: int):
        subscriber = store.get_subscriber(subscriber_id)
        return subscriber.email if subscriber else None

    subscriber_id = verify_token(token, settings.secret, store.get_subscriber)
    if subscriber_id is None:
        page = render_page("Link not valid", "This unsubscribe link is not valid. Use the link in your latest email.",
                           None, settings)
        return 403, HTML, page.encode()
    if method == "GET":
        page = render_page("Unsubscribe?", f"Stop the {settings.site_name} digest for {email_of(subscriber_id)}?",
                           token, settings)
        return 200, HTML, page.encode()
    if method == "POST":
        store.unsubscribe(subscriber_id)
        page = render_page("Unsubscribed", f"{email_of(subscriber_id)} will get no more {settings.site_name} emails.",
                           None, settings)
        return 200, HTML, page.encode()
    return 405, "text/plain", b"method not allowed\n"
