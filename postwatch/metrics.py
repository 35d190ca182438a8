"""Prometheus series of one postwatch process, shared by the daemon's jobs and the web endpoint."""
from __future__ import annotations


class Metrics:
    """Prometheus series for one process (own registry, so tests can build several)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        self.checks = Counter("postwatch_checks", "Source checks by result", ["source", "result"], registry=self.registry)
        self.check_crashes = Counter("postwatch_check_crashes", "Source checks that crashed (a bug or a malformed "
                                     "stored state; also counted as checks with result=\"error\")", ["source"],
                                     registry=self.registry)
        self.requests = Counter("postwatch_http_requests", "HTTP requests sent to watched sites", ["source"], registry=self.registry)
        self.not_modified = Counter("postwatch_http_not_modified", "HTTP 304 answers", ["source"], registry=self.registry)
        self.response_bytes = Counter("postwatch_http_response_bytes", "Body bytes received", ["source"], registry=self.registry)
        self.events = Counter("postwatch_events", "Change events by kind", ["source", "kind"], registry=self.registry)
        self.digests_sent = Counter("postwatch_digests_sent", "Messages accepted by the mail channel", registry=self.registry)
        self.digests_failed = Counter("postwatch_digests_failed", "Messages refused permanently", registry=self.registry)
        self.digests_retried = Counter("postwatch_digests_retried", "Send attempts put off for a retry", registry=self.registry)
        self.subscribers = Gauge("postwatch_subscribers", "Subscribers by status (active, unsubscribed, suppressed)",
                                 ["status"], registry=self.registry)
        self.deliveries = Counter("postwatch_deliveries", "Delivery attempts by channel (email, webhook, apprise) "
                                  "and result (sent, failed, retried)", ["channel", "result"], registry=self.registry)
        self.outbox_pending = Gauge("postwatch_outbox_pending", "Messages waiting in the outbox by channel",
                                    ["channel"], registry=self.registry)
        self.outbox_depth = Gauge("postwatch_outbox_depth", "Messages waiting in the outbox", registry=self.registry)
        self.last_success = Gauge("postwatch_source_last_success_timestamp_seconds", "Last successful check", ["source"], registry=self.registry)
        self.check_cycle_end = Gauge("postwatch_last_check_cycle_end_timestamp_seconds", "When the last check ended", registry=self.registry)
