"""Unsubscribe tokens: the subscriber id signed with HMAC-SHA256 together with their address
and the start of their current subscription, so a link cannot be forged for someone else's
address, and a link from before an unsubscribe does not end a later subscription."""
from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime, timedelta, timezone

from state import Subscriber

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(subscriber: Subscriber, secret: bytes) -> bytes:
    message = f"unsubscribe:{subscriber.id}:{subscriber.email.lower()}"
    since: datetime | None = subscriber.subscribed_at
    if since is not None:
        # Microseconds since the epoch: the same number whichever database hands the time back.
        message += f":{(since - _EPOCH) // timedelta(microseconds=1)}"
    # A subscription from before migration 0004 (no start recorded) keeps the original message,
    # so the links already in people's mailboxes keep working.
    return hmac.new(secret, message.encode(), hashlib.sha256).digest()[:18]


def make_token(subscriber: Subscriber, secret: bytes) -> str:
    """`subscriber` has .id, .email and .subscribed_at (a state.Subscriber)."""
    if not secret:
        raise ValueError("an unsubscribe secret is required")
    return f"{subscriber.id}.{_b64(_mac(subscriber, secret))}"


def verify_token(token: str, secret: bytes, lookup) -> int | None:
    """The subscriber id, or None for a malformed, forged or tampered token, or one issued for an
    earlier subscription of the address. `lookup(id)` returns the subscriber (or None)."""
    try:
        raw_id, signature = (token or "").strip().split(".", 1)
        subscriber_id = int(raw_id)
        given = _unb64(signature)
    except (ValueError, TypeError):
        return None
    if not 0 < subscriber_id < 2**63:      # no such row, and no database could look it up
        return None
    subscriber = lookup(subscriber_id)
    if subscriber is None or not secret:
        return None
    return subscriber_id if hmac.compare_digest(given, _mac(subscriber, secret)) else None
