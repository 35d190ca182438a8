"""Suppression rules, as pure functions (no database): who may be subscribed again, and which
SMTP refusals say an address is dead.

An address that unsubscribed, or that was suppressed after hard bounces, is never made active
again by an operator's `subscribers add` or `import`: only the person's new consent does that,
and the operator has to say so (`--resubscribe`). Mailing people who left, and hammering dead
addresses, is how a sender loses its inbox placement.

A hard bounce is a permanent refusal *of the address* (RFC 3463 enhanced status 5.1.x, the
destination mailbox; 5.2.1, mailbox disabled). A permanent refusal of *the message* (5.2.2
mailbox full, 5.3.4 / 552 too big, 5.7.x / 554 policy or spam) says nothing about whether the
address works, so it does not count. A server that gives no enhanced code is judged by the
basic code: 550 (mailbox unavailable), 551 (user not local) and 553 (mailbox name not allowed)
are about the address; 552 and 554 are not.
"""
from __future__ import annotations

import re

# Statuses that are not re-activated without the person's new consent, and why.
NOT_WITHOUT_CONSENT = {
    "unsubscribed": "unsubscribed",
    "suppressed": "suppressed",
}

# The sender's own address problems (5.1.7 bad sender mailbox, 5.1.8 bad sender's system) are
# 5.1.x too, but say nothing about the recipient.
_SENDER_PROBLEMS = {"5.1.7", "5.1.8"}
_ADDRESS_CODES_WITHOUT_ENHANCED = {550, 551, 553}
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?!\S)")

DEFAULT_BOUNCE_LIMIT = 3


def refusal(status: str) -> str | None:
    """Why an address with this status may not be made active again by an operator (None: it may)."""
    reason = NOT_WITHOUT_CONSENT.get(status)
    if reason is None:
        return None
    return f"{reason}; not re-subscribed without their consent"


def enhanced_code(text: str) -> str | None:
    """The RFC 3463 enhanced status code that starts an SMTP reply's text ("5.1.1 user unknown")."""
    match = _ENHANCED.match(text.strip())
    return ".".join(match.groups()) if match else None


def is_hard_bounce(code: int | None, enhanced: str | None) -> bool:
    """Whether a permanent SMTP refusal says the recipient's address does not work."""
    if code is None or not 500 <= code < 600:
        return False
    if enhanced is not None and enhanced.startswith("5."):
        return (enhanced.startswith("5.1.") and enhanced not in _SENDER_PROBLEMS) or enhanced == "5.2.1"
    return code in _ADDRESS_CODES_WITHOUT_ENHANCED


def suppressed_by(bounces: int, limit: int = DEFAULT_BOUNCE_LIMIT) -> bool:
    """Whether `bounces` hard bounces in a row suppress the address."""
    return bounces >= limit


def suppression_reason(bounces: int, last_error: str) -> str:
    return f"{bounces} hard bounce{'s' * (bounces != 1)} in a row (last: {last_error})"[:200]
