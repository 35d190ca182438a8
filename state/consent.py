"""Consent rules, as pure functions (no database): what a signup on the /subscribe page does for an
address in each state, when an unconfirmed signup is reminded once or expires, and the hash an
erased address leaves behind.

A signup never makes anyone active: only following the link in the confirmation email does. An
address that unsubscribed, was suppressed or was erased on request may sign up again, and the
link it follows is its recorded re-consent. Whatever the address's state, the page answers the
same, so it tells nobody who is subscribed.
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

# What a signup does: (store the request?, send a confirmation?)
NEW = "new"                 # no such address: a pending subscriber, and a confirmation email
RETURNING = "returning"     # unsubscribed, suppressed or forgotten: a confirmation email; confirming is re-consent
WAITING = "waiting"         # a signup already waits for its link: its settings change, nothing is sent
ACTIVE = "active"           # already subscribed: nothing changes, nothing is sent

JOINED_VIA = ("page", "cli", "import")


def address_hash(email: str) -> str:
    """What an erased address leaves behind: the sha256 of the normalised address, lower-cased."""
    return hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()


def signup_outcome(status: str | None, signup_at: datetime | None, now: datetime, expire_after: timedelta,
                   forgotten: bool = False) -> str:
    """What a signup for an address does, given its stored status (None: no row) and the time
    of the signup already waiting for it, if any."""
    waiting = signup_at is not None and now - signup_at < expire_after
    if status is None:
        return RETURNING if forgotten else NEW
    if status == "active":
        return ACTIVE
    if waiting:
        return WAITING
    return NEW if status == "pending" else RETURNING


def reminder_due(signup_at: datetime | None, reminded_at: datetime | None, now: datetime, remind_after: timedelta,
                 expire_after: timedelta) -> bool:
    """One reminder, never more, once `remind_after` has passed and before the signup expires."""
    if signup_at is None or reminded_at is not None:
        return False
    return remind_after <= now - signup_at < expire_after


def consent_note(previous_status: str | None, forgotten: bool, how: str = "confirmation link") -> str | None:
    """What a re-consent records: how, and what the address had been."""
    if forgotten:
        return f"re-consent by {how} after the address was erased on request"
    if previous_status in ("unsubscribed", "suppressed"):
        return f"re-consent by {how} after the address was {previous_status}"
    return None
