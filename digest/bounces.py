"""Reading what comes back: RFC 3464 delivery status notifications (asynchronous bounces), as a
pure function of the message's bytes. Whether a status is a hard bounce is decided by
state.suppression, as for a refusal at send time."""
from __future__ import annotations

import re
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.parser import HeaderParser

from state.suppression import enhanced_code, is_hard_bounce

_BASIC = re.compile(r"^\s*(?:smtp\s*;)?\s*([245]\d\d)\b", re.IGNORECASE)


@dataclass
class DsnRecipient:
    action: str               # failed, delayed, delivered, relayed, expanded
    status: str | None        # the enhanced status, e.g. 5.1.1
    code: int | None          # the SMTP reply code of the Diagnostic-Code, when it has one
    detail: str               # one line for the operator

    @property
    def hard_bounce(self) -> bool:
        # A DSN without a Diagnostic-Code still says "failed" and the enhanced status: 5.x.x is
        # permanent, read as the reply code that goes with it.
        code = self.code or (550 if (self.status or "").startswith("5.") else None)
        return self.action == "failed" and is_hard_bounce(code, self.status)


def read_dsn(raw: bytes) -> list[DsnRecipient]:
    """The per-recipient fields of a multipart/report; report-type=delivery-status. [] for any
    other message (an auto-reply, a forged or broken one)."""
    message = message_from_bytes(raw, policy=policy.compat32)
    if message.get_content_type() != "multipart/report" or \
            (message.get_param("report-type") or "").lower() != "delivery-status":
        return []
    recipients = []
    for part in message.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        payload = part.get_payload()
        if isinstance(payload, list):          # compat32 parses the status groups as messages
            groups = payload
        else:
            text = payload if isinstance(payload, str) else payload.decode("ascii", "replace")
            groups = [HeaderParser().parsestr(block) for block in re.split(r"\r?\n\r?\n", text) if block.strip()]
        for group in groups[1:]:               # the first group is about the reporting MTA
            action = (group.get("Action") or "").strip().lower()
            if not action:
                continue
            status = enhanced_code(str(group.get("Status") or ""))
            diagnostic = " ".join(str(group.get("Diagnostic-Code") or "").split())
            basic = _BASIC.match(diagnostic)
            recipients.append(DsnRecipient(action=action, status=status, code=int(basic.group(1)) if basic else None,
                                           detail=(diagnostic.split(";", 1)[-1].strip() or f"status {status}")[:300]))
    return recipients
