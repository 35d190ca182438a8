"""The webhook's payload and its signature: what is POSTed, and how a receiver checks it.

The body is JSON of the schema `postwatch.events/1` (README, "Webhooks"). Each attempt is signed
when it is sent, in the header

    Postwatch-Signature: t=1767350400,v1=5f1c...e9

where v1 is the hex HMAC-SHA256, keyed with the receiver's secret, of `t + "." + body` (the
timestamp in Unix seconds, a dot, the body's bytes), as Stripe does. A receiver refuses a
signature that does not match, a timestamp too far from its clock (a replay of an old request)
and a delivery id it has already seen (the same delivery retried after it answered 2xx too
late: its id, in the body and in `Postwatch-Delivery`, stays the same on every retry).

Only the standard library: a receiver can copy `verify_signature` without installing postwatch."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import datetime

SCHEMA = "postwatch.events/1"
SIGNATURE_HEADER = "Postwatch-Signature"
DELIVERY_HEADER = "Postwatch-Delivery"
SCHEMA_HEADER = "Postwatch-Schema"
# How far a receiver accepts the signed timestamp from its own clock, by default.
DEFAULT_TOLERANCE = 300


class InvalidSignature(ValueError):
    """The request was not signed by postwatch with this secret, or not recently; str() says why."""


def endpoint_secret(master: bytes, url: str) -> str:
    """The signing secret of one receiver: derived from postwatch's master secret and the URL,
    so each receiver has its own (one that leaks lets nobody sign for the others) and none has
    to be stored. `postwatch webhook secret URL` prints it for the receiver's operator."""
    digest = hmac.new(master, b"postwatch webhook v1\n" + url.encode(), hashlib.sha256).digest()
    return "whsec_" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The value of the Postwatch-Signature header for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: str, header: str, body: bytes, *, tolerance: float = DEFAULT_TOLERANCE,
                     now: float | None = None) -> int:
    """Check a Postwatch-Signature header against the body as received (its exact bytes): the
    signed timestamp, or InvalidSignature. A header may carry several v1 values (while a secret
    is being rotated): one that matches is enough."""
    fields: dict[str, list[str]] = {}
    for part in (header or "").split(","):
        key, sep, value = part.strip().partition("=")
        if sep:
            fields.setdefault(key, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        raise InvalidSignature("no timestamp t=... in the signature header") from None
    if not fields.get("v1"):
        raise InvalidSignature("no v1=... signature in the signature header")
    expected = sign(secret, body, timestamp).rpartition("v1=")[2]
    if not any(hmac.compare_digest(expected, candidate) for candidate in fields["v1"]):
        raise InvalidSignature("the signature does not match the body (another secret, or the body was changed)")
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        raise InvalidSignature(f"the signature's timestamp is {now - timestamp:+.0f} s from now "
                               f"(more than {tolerance:g} s: a replayed request?)")
    return timestamp


def delivery_id(list_id: str, subscriber_id: int, seqs: list[int]) -> str:
    """The same subscriber and the same events always give the same delivery id, as a digest's
    Message-ID: a message composed twice is recognisably the same delivery."""
    key = f"{list_id}|webhook|{subscriber_id}|{min(seqs, default=0)}-{max(seqs, default=0)}|{len(seqs)}"
    return "dlv_" + hashlib.sha256(key.encode()).hexdigest()[:32]


def _when(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def event_json(event, source_titles: dict[str, str]) -> dict:
    """One event of the payload."""
    entry = {
        "seq": event.seq,
        "kind": event.kind,                   # new, updated, removed, restored
        "source": event.source,
        "source_title": source_titles.get(event.source, event.source),
        "url": event.url,
        "title": event.title,
        "published": _when(event.published),
        "detected": _when(event.created_at),
        "summary": event.summary,
    }
    if event.diff:
        entry["diff"] = event.diff            # for "updated": what changed (title, text lines)
    return entry


def payload(delivery: str, events, *, site_name: str, source_titles: dict[str, str], now: datetime) -> bytes:
    """The JSON body of one delivery, as bytes (signed and sent exactly as they are)."""
    document = {
        "schema": SCHEMA,
        "id": delivery,
        "created": _when(now),
        "site": site_name,
        "events": [event_json(e, source_titles) for e in events],
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
