"""Unsubscribe tokens: the subscriber id signed with HMAC-SHA256, so a link cannot be forged
for someone else's address."""
from __future__ import annotations

import base64
import hashlib
import hmac


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(subscriber_id: int, email: str, secret: bytes) -> bytes:
    message = f"unsubscribe:{subscriber_id}:{email.lower()}".encode()
    return hmac.new(secret, message, hashlib.sha256).digest()[:18]


def make_token(subscriber_id: int, email: str, secret: bytes) -> str:
    if not secret:
        raise ValueError("an unsubscribe secret is required")
    return f"{subscriber_id}.{_b64(_mac(subscriber_id, email, secret))}"


def verify_token(token: str, secret: bytes, lookup_email) -> int | None:
    """The subscriber id, or None for a malformed, forged or tampered token. `lookup_email(id)`
    returns the address the id belongs to (so a token dies with its address)."""
    try:
        raw_id, signature = (token or "").strip().split(".", 1)
        subscriber_id = int(raw_id)
        given = _unb64(signature)
    except (ValueError, TypeError):
        return None
    email = lookup_email(subscriber_id)
    if not email or not secret:
        return None
    return subscriber_id if hmac.compare_digest(given, _mac(subscriber_id, email, secret)) else None
