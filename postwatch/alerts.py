"""The operator's alerts: one email per problem per day ([alerts] operator, [alerts] every),
queued in the outbox like any other message."""
from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable

from postwatch.config import Config

if TYPE_CHECKING:
    from digest.settings import DigestSettings
    from state import Store

log = logging.getLogger("postwatch")


class Alerts:
    """Alerts to the operator. `digest_settings` gives what an alert is rendered with (read when
    one is due, not before)."""

    def __init__(self, config: Config, store: Store, digest_settings: Callable[[], DigestSettings]):
        self.config, self.store, self.digest_settings = config, store, digest_settings
        self.queued = 0           # alerts queued since the daemon last delivered

    def alert(self, key: str, subject: str, lines: list[str]) -> bool:
        """One email to the operator per problem (`key`) per day, through the same outbox."""
        operator = self.config.alerts.operator
        if not operator:
            return False
        now = datetime.now(timezone.utc)
        if not self.store.alert_due(key, now, self.config.alerts.every):
            return False
        from digest.compose import build_alert

        self.store.enqueue_message(build_alert(operator, subject, lines, self.digest_settings(), now), now)
        self.queued += 1
        log.warning("alert queued for %s: %s", operator, subject)
        return True

    def volatile(self, source: str, urls: list[str]) -> None:
        """Once per post that starts changing on every fetch (the key names the posts, so the
        daily limit does not swallow other posts that turn volatile later)."""
        log.warning("%s: %d posts change on every fetch; their edits are not mailed: %s", source, len(urls),
                    ", ".join(urls), extra={"source": source})
        key = hashlib.sha256("\n".join(sorted(urls)).encode()).hexdigest()[:16]
        self.alert(f"post-volatile:{source}:{key}",
                   f"postwatch: {len(urls)} post(s) of '{source}' change on every fetch",
                   [f"{source}: these posts show different content every time they are fetched (a rotating ad, "
                    "a counter or a timestamp inside the article?):", *(f"  {url}" for url in urls),
                    "Their edits are not mailed while this lasts. Add an `exclude` selector for the changing "
                    f"part to source '{source}' in the config, or ignore this if it stops by itself."])

    def feed_problem(self, source: str, url: str, problem: str) -> None:
        self.alert(f"source-feed:{source}", f"postwatch: the feed of source '{source}' cannot be read",
                   [f"{source}: {problem}", f"URL: {url}",
                    "The listing's posts are read without it, so new posts are still found; posts "
                    "that only the feed carries are not. Fix or remove the feed in the config (feed_url), "
                    "or ignore this if the site's feed is gone for good."])

    def held(self, source: str, held_events: int, reason: str | None) -> None:
        self.alert(f"source-suspect:{source}", f"postwatch: changes of source '{source}' held as suspect",
                   [f"{source}: {reason}", f"{held_events} events held.",
                    f"Release them with: postwatch sources release {source}"])

    def failing(self, source: str, url: str, failures: int, error: str) -> None:
        self.alert(f"source-failing:{source}", f"postwatch: source '{source}' failed {failures} checks in a row",
                   [error, f"URL: {url}", "Nothing was changed in the stored posts."])

    def outbox_stuck(self) -> None:
        """An alert when the oldest pending message has waited [alerts] undeliverable_after."""
        stats = self.store.outbox_stats()
        oldest = stats.get("oldest_pending_age_s", 0) or 0
        if oldest >= self.config.alerts.undeliverable_after.total_seconds():
            self.alert("outbox-stuck", "postwatch: digests undeliverable",
                       [f"{stats.get('pending', 0)} messages waiting; the oldest for {oldest / 3600:.1f} h.",
                        "Check the [smtp] settings and the mail server."])
