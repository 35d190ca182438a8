"""Link tokens, signed with HMAC-SHA256 and the unsubscribe secret.

Unsubscribe and preferences tokens: the subscriber id signed together with their address and the
start of their current subscription, so a link cannot be forged for someone else's address, and
a link from before an unsubscribe does not work for a later subscription. Each purpose signs a
message of its own: an unsubscribe link does not open the preferences page, nor the reverse.

Confirmation tokens: the pending signup (id, address, when it was asked) and when the link
expires; a later signup of the address, or a confirmed one, makes the link void."""
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


def _micros(value: datetime) -> int:
    """Microseconds since the epoch: the same number whichever database hands the time back."""
    return (value - _EPOCH) // timedelta(microseconds=1)


def _mac(subscriber: Subscriber, secret: bytes, purpose: str = "unsubscribe") -> bytes:
    message = f"{purpose}:{subscriber.id}:{subscriber.email.lower()}"
    since: datetime | None = subscriber.subscribed_at
    if since is not None:
        message += f":{_micros(since)}"
    # A subscription from before migration 0004 (no start recorded) keeps the original message,
    # so the links already in people's mailboxes keep working.
    return hmac.new(secret, message.encode(), hashlib.sha256).digest()[:18]


def make_token(subscriber: Subscriber, secret: bytes, purpose: str = "unsubscribe") -> str:
    """`subscriber` has .id, .email and .subscribed_at (a state.Subscriber); `purpose` is
    "unsubscribe" or "preferences"."""
    if not secret:
        raise ValueError("an unsubscribe secret is required")
    return f"{subscriber.id}.{_b64(_mac(subscriber, secret, purpose))}"


def verify_token(token: str, secret: bytes, lookup, purpose: str = "unsubscribe") -> int | None:
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
    return subscriber_id if hmac.compare_digest(given, _mac(subscriber, secret, purpose)) else None


# -- confirmation links -------------------------------------------------------------------------
CONFIRMED, EXPIRED, INVALID = "confirmed", "expired", "invalid"


def _confirm_mac(subscriber: Subscriber, expires: int, secret: bytes) -> bytes:
    asked = _micros(subscriber.signup_at) if subscriber.signup_at else 0
    message = f"confirm:{subscriber.id}:{subscriber.email.lower()}:{asked}:{expires}"
    return hmac.new(secret, message.encode(), hashlib.sha256).digest()[:18]


def make_confirm_token(subscriber: Subscriber, secret: bytes, expires: datetime) -> str:
    """For a subscriber with a waiting signup (.signup_at); the link works until `expires`."""
    if not secret:
        raise ValueError("an unsubscribe secret is required")
    if subscriber.signup_at is None:
        raise ValueError(f"{subscriber.email} has no signup waiting for confirmation")
    stamp = int(expires.timestamp())
    return f"{subscriber.id}.{stamp}.{_b64(_confirm_mac(subscriber, stamp, secret))}"


def check_confirm_token(token: str, secret: bytes, lookup, now: datetime) -> tuple[str, int | None]:
    """(CONFIRMED, subscriber id) for a good link; (EXPIRED, None) past its time; (INVALID, None)
    for a malformed, forged or tampered one, or one whose signup is gone or already confirmed.
    The time is read before the signature: an expired link is told so even once its signup was
    deleted, and either way nothing changes."""
    try:
        raw_id, raw_expires, signature = (token or "").strip().split(".", 2)
        subscriber_id, expires = int(raw_id), int(raw_expires)
        given = _unb64(signature)
    except (ValueError, TypeError):
        return INVALID, None
    if not 0 < subscriber_id < 2**63 or not 0 < expires < 2**40:
        return INVALID, None
    if now.timestamp() > expires:
        return EXPIRED, None
    subscriber = lookup(subscriber_id)
    if subscriber is None or subscriber.signup_at is None or not secret:
        return INVALID, None
    if not hmac.compare_digest(given, _confirm_mac(subscriber, expires, secret)):
        return INVALID, None
    return CONFIRMED, subscriber_id


# -- addresses that name a subscriber (VERP) -----------------------------------------------------
# Lower-case hex: a mail server may fold the case of a local part, never its digits and letters a-f.
#
# Bound like the https links: the id signed with the address and the start of the current
# subscription, so that after an unsubscribe and a new subscription, or once the subscriber was
# erased (subscribers forget) and another took the id, an old mailto or return path acts on
# nobody. Tokens mailed before this binding (the id alone) are not honoured any more: on SQLite
# before revision 0012 an id could be reused, and such a token cannot tell its own subscriber from
# the next one given the id. The https link in the same mails still unsubscribes, and a bounce of
# mail sent before the upgrade is refused once (the next one counts).
def _address_mac(purpose: str, subscriber: Subscriber, secret: bytes) -> str:
    since = _micros(subscriber.subscribed_at) if subscriber.subscribed_at is not None else "-"
    message = f"{purpose}-address:{subscriber.id}:{subscriber.email.lower()}:{since}"
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()[:20]


def make_address_token(subscriber: Subscriber, secret: bytes, purpose: str) -> str:
    """The part after '+' of a VERP return path ("bounce") or a mailto unsubscribe address
    ("unsubscribe") of `subscriber` (.id, .email, .subscribed_at; a state.Subscriber)."""
    if not secret:
        raise ValueError("an unsubscribe secret is required")
    return f"{subscriber.id}.{_address_mac(purpose, subscriber, secret)}"


def verify_address_token(token: str, secret: bytes, purpose: str, lookup) -> int | None:
    """The subscriber id of a token made by make_address_token for the subscriber's current
    subscription; None for a forged one, or one of an earlier subscription or an erased
    subscriber. `lookup(id)` returns the subscriber (or None)."""
    raw_id, _, given = (token or "").strip().lower().partition(".")
    if not raw_id.isdigit() or not secret or not 0 < int(raw_id) < 2**63 or len(given) != 20:
        return None
    subscriber = lookup(int(raw_id))
    if subscriber is None:
        return None
    return subscriber.id if hmac.compare_digest(given.encode(), _address_mac(purpose, subscriber, secret).encode()) else None
