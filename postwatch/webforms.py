"""What guards the daemon's forms, as plain objects without a web framework: CSRF tokens, the
signup rate limits and the security headers every page carries.

CSRF: a signed double submit. Each page with a form sets a random nonce in a cookie (HttpOnly,
SameSite=Strict) and puts HMAC(secret, nonce + time) with the time in a hidden field; a POST is
taken only when the cookie's nonce and the field agree, the signature is ours and the token is
younger than CSRF_MAX_AGE. Nothing is kept on the server, so a restart loses nothing, and another
site can neither read the field nor set the cookie.

Rate limits: sliding windows kept in memory. One daemon serves one database (the instance lease;
`postwatch worker` serves no pages), so its memory sees every signup; a restart forgets the
counts, which only lets a few more through (at most one more `[signup] per_hour` of mail).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict, deque
from datetime import timedelta

CSRF_COOKIE = "pw_csrf"
CSRF_FIELD = "csrf"
CSRF_MAX_AGE = timedelta(hours=2)

# No script anywhere; the pages' own <style>; forms post only to this origin; no framing
# (clickjacking a one-click unsubscribe or a preferences change).
CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
                           "frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",          # a token in the URL never leaks to a linked site
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",                  # frame-ancestors for browsers that predate it
    "Cache-Control": "no-store",                # pages carry tokens and addresses
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class CsrfGuard:
    def __init__(self, secret: bytes, max_age: timedelta = CSRF_MAX_AGE):
        if not secret:
            raise ValueError("a secret is required to sign CSRF tokens")
        self.secret, self.max_age = secret, max_age.total_seconds()

    @staticmethod
    def new_nonce() -> str:
        return secrets.token_urlsafe(18)

    def _mac(self, nonce: str, stamp: int) -> str:
        return _b64(hmac.new(self.secret, f"csrf:{nonce}:{stamp}".encode(), hashlib.sha256).digest()[:18])

    def token(self, nonce: str, now: float | None = None) -> str:
        stamp = int(now if now is not None else time.time())
        return f"{stamp}.{self._mac(nonce, stamp)}"

    def valid(self, nonce: str | None, token: str | None, now: float | None = None) -> bool:
        """Whether `token` (the form's field) was issued by us for `nonce` (the cookie's) and is
        recent."""
        if not nonce or not token:
            return False
        try:
            raw_stamp, mac = token.split(".", 1)
            stamp = int(raw_stamp)
        except ValueError:
            return False
        age = (now if now is not None else time.time()) - stamp
        if not -60 <= age <= self.max_age:
            return False
        return hmac.compare_digest(mac.encode(), self._mac(nonce, stamp).encode())


class RateLimiter:
    """At most `limit` events per key in any `window` seconds. Memory stays bounded: at most
    `max_keys` keys are kept, the least recently used dropped first (which can only let a
    dropped key through sooner).

    `variant`: a key's events in one window must all carry the variant of its first (one
    mailbox, many spellings: victim+1@ and victim+2@ are one key, and only the first spelling
    is taken until the window has passed)."""

    def __init__(self, limit: int, window: float, max_keys: int = 100_000, clock=time.monotonic):
        self.limit, self.window, self.max_keys, self.clock = limit, window, max_keys, clock
        self._events: OrderedDict[str, deque] = OrderedDict()
        self._variants: dict[str, str | None] = {}

    def allow(self, key: str, variant: str | None = None) -> bool:
        """Count one event for `key`; False (and not counted) when the limit is reached, or
        when the window already holds events of another variant."""
        now = self.clock()
        events = self._events.get(key)
        if events is None:
            events = self._events[key] = deque()
            while len(self._events) > self.max_keys:
                dropped, _ = self._events.popitem(last=False)
                self._variants.pop(dropped, None)
        else:
            self._events.move_to_end(key)
        while events and now - events[0] >= self.window:
            events.popleft()
        if not events:
            self._variants[key] = variant
        elif self._variants.get(key) != variant:
            return False
        if len(events) >= self.limit:
            return False
        events.append(now)
        return True
