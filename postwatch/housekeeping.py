"""Housekeeping ([daemon] housekeeping, a cron line): what is no longer needed pruned, and the
pending signups reminded once, then expired."""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from postwatch.config import Config

if TYPE_CHECKING:
    from postwatch.mailer import Mailer
    from state import Store

log = logging.getLogger("postwatch")


def housekeeping(config: Config, store: Store, mailer: Mailer, now: datetime | None = None) -> dict[str, int]:
    """Prune what is no longer needed; remind unconfirmed signups once, and expire them. The
    counts of each."""
    from postwatch.signup import remind_and_expire

    now = now or datetime.now(timezone.utc)
    pruned = {**store.prune(now, config.daemon.retention), **remind_and_expire(config, store, mailer, now)}
    if any(pruned.values()):
        log.info("pruned %s", ", ".join(f"{v} {k}" for k, v in pruned.items()))
    return pruned
