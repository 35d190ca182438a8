"""Suppression that sticks: an address that unsubscribed or kept bouncing is not mailed again
until the person consents again. The rules alone, the store on SQLite and PostgreSQL, and a real
aiosmtpd server that refuses one address at RCPT TO, driven by flush_outbox and by the CLI."""
from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from crawler.items import PostItem
from digest.delivery import make_channel
from digest.sender import FlushStats, compose_and_queue, flush_outbox
from digest.settings import DigestSettings, SmtpSettings
from support.harness import Cli, get, write_config
from postwatch.testing.mailcatcher import MailCatcher, _KeepingHandler
from state import CheckInput, NeedsConsent, SourceRecord, Store
from state.suppression import enhanced_code, is_hard_bounce, refusal, suppressed_by

NOW = datetime(2026, 11, 3, 8, tzinfo=timezone.utc)
USER_UNKNOWN = "550 5.1.1 <bo@example.org>: Recipient address rejected: User unknown"


# -- the rules -----------------------------------------------------------------------------

@pytest.mark.parametrize("code, text, hard", [
    (550, "5.1.1 User unknown", True),
    (550, "5.1.10 Recipient address rejected: null MX", True),
    (550, "5.2.1 Mailbox disabled, not accepting messages", True),
    (551, "User not local", True),                            # no enhanced code: judged by the basic code
    (550, "Requested action not taken: mailbox unavailable", True),
    (552, "5.3.4 Message size exceeds fixed maximum message size", False),
    (552, "5.2.2 Mailbox full", False),
    (554, "5.7.1 Message rejected as spam", False),
    (550, "5.7.1 Message rejected due to content restrictions", False),
    (553, "5.1.8 Sender address domain does not exist", False),   # the sender's address, not the recipient's
    (554, "Transaction failed", False),
    (450, "4.1.1 Mailbox temporarily unavailable", False),
    (None, "", False),
])
def test_only_a_permanent_refusal_of_the_address_is_a_hard_bounce(code, text, hard):
    assert is_hard_bounce(code, enhanced_code(text)) is hard


def test_enhanced_codes_are_read_from_the_start_of_the_reply_only():
    assert enhanced_code("5.1.1 User unknown") == "5.1.1"
    assert enhanced_code("  4.7.0 try later") == "4.7.0"
    assert enhanced_code("User unknown (see 5.1.1)") is None
    assert enhanced_code("5.1.1.2 nonsense") is None


def test_unsubscribed_and_suppressed_addresses_need_new_consent_and_three_bounces_suppress():
    assert refusal("unsubscribed") == "unsubscribed; not re-subscribed without their consent"
    assert refusal("suppressed") == "suppressed; not re-subscribed without their consent"
    assert refusal("active") is None
    assert [suppressed_by(n) for n in (1, 2, 3, 4)] == [False, False, True, True]
    assert suppressed_by(1, limit=1)


# -- the store -----------------------------------------------------------------------------

def test_bounces_in_a_row_suppress_and_cancel_what_is_queued_and_a_delivery_resets_them(store):
    ada = store.add_subscriber("ada@example.org")
    assert store.record_bounce(ada.id, USER_UNKNOWN, NOW) is None
    assert store.record_bounce(ada.id, USER_UNKNOWN, NOW) is None
    queued = store.enqueue_message(_message("m1", "ada@example.org"), NOW, subscriber_id=ada.id)
    [item] = store.due_outbox(NOW, claim=False)
    store.mark_sent(item.id, NOW, ada.id)                 # delivered after all: the run is over
    assert store.get_subscriber(ada.id).bounces == 0
    store.enqueue_message(_message("m2", "ada@example.org"), NOW, subscriber_id=ada.id)

    for _ in range(2):
        assert store.record_bounce(ada.id, USER_UNKNOWN, NOW) is None
    suppressed = store.record_bounce(ada.id, USER_UNKNOWN, NOW)

    assert suppressed is not None and suppressed.status == "suppressed" and suppressed.suppressed_at == NOW
    assert suppressed.suppressed_reason == f"3 hard bounces in a row (last: {USER_UNKNOWN})"
    assert store.due_outbox(NOW + timedelta(days=1), claim=False) == []      # m2 is not retried
    assert queued and store.subscriber_counts() == {"suppressed": 1}

    with pytest.raises(NeedsConsent, match="^ada@example.org: suppressed; not re-subscribed"):
        store.add_subscriber("ada@example.org")
    entries = [{"email": "ada@example.org", "cadence": "daily", "send_time": "08:00", "timezone": "UTC"}]
    assert store.import_subscribers(entries).refused == {0: "suppressed; not re-subscribed without their consent"}

    back = store.add_subscriber("ADA@example.org", resubscribe=True, now=NOW + timedelta(days=2))
    assert (back.status, back.bounces, back.suppressed_reason, back.suppressed_at) == ("active", 0, None, None)
    assert back.subscribed_at == NOW + timedelta(days=2)


def test_an_unsubscribed_address_is_refused_by_add_unless_resubscribe(store):
    bo = store.add_subscriber("bo@example.org")
    store.unsubscribe(bo.id)
    with pytest.raises(NeedsConsent, match="unsubscribed"):
        store.add_subscriber("bo@example.org", cadence="weekly")
    assert store.get_subscriber(bo.id).status == "unsubscribed"
    assert store.add_subscriber("bo@example.org", resubscribe=True).status == "active"
    assert store.add_subscriber("bo@example.org", cadence="weekly").cadence == "weekly"   # active: settings change


def _message(message_id, to_addr):
    from state import ComposedMessage
    return ComposedMessage(message_id=f"<{message_id}@postwatch.test>", subject="s", to_addr=to_addr,
                           raw=b"From: a@b.c\r\n\r\nx")


# -- a real SMTP server that refuses one address at RCPT TO --------------------------------

class _RefusingRecipients(_KeepingHandler):
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 - aiosmtpd hook
        with self.catcher._lock:
            self.catcher.recipients_tried.append(address)
            answer = self.catcher.refuse.get(address)
        if answer:
            await asyncio.sleep(self.catcher.refusal_delay)
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"


class RefusingCatcher(MailCatcher):
    """A MailCatcher whose `refuse` maps an address to the answer its RCPT TO gets."""

    handler_class = _RefusingRecipients

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.refuse: dict[str, str] = {}
        self.refusal_delay = 0.0            # a slow refusal keeps it in flight while others are taken
        self.recipients_tried: list[str] = []

    def delivered_to(self, address: str) -> int:
        return sum(address in rcpt for _, rcpt in self.envelopes)


def _post(title: str) -> PostItem:
    return PostItem(url=f"https://libertyinnorthkorea.org/blog/{title}", title=title, published=None,
                    body_html=f"<p>{title}</p>", summary=None, origin="page")


class DigestRounds:
    """A store with three subscribers; each round: a new post, a digest for every subscriber, one
    flush through the SMTP server at `port`."""

    def __init__(self, tmp_path, port: int):
        self.port, self.titles = port, ["base"]
        self.store = Store(str(tmp_path / "state.db"))
        self.store.sync_sources([SourceRecord(name="link", url="https://libertyinnorthkorea.org/blog")])
        self.store.apply_check("link", CheckInput(posts=[_post("base")], baseline=True), NOW)
        for address in ("ada@example.org", "bo@example.org", "cy@example.org"):
            self.store.add_subscriber(address)

    def run(self, day: int) -> FlushStats:
        now = NOW + timedelta(days=day)
        self.titles.append(f"post{day}")
        self.store.apply_check("link", CheckInput(posts=[_post(t) for t in self.titles]), now)
        compose_and_queue(self.store, DigestSettings(secret=b"k"), now)
        channel = make_channel("smtp", settings=SmtpSettings(host="127.0.0.1", port=self.port, security="none", timeout=5))
        with channel:
            return flush_outbox(self.store, channel, now, bounce_limit=3)


def test_three_user_unknown_refusals_in_a_row_suppress_one_subscriber_and_the_others_keep_receiving(tmp_path):
    with RefusingCatcher() as smtp:
        rounds = DigestRounds(tmp_path, smtp.port)
        store = rounds.store
        smtp.refuse["bo@example.org"] = USER_UNKNOWN
        stats = [rounds.run(day) for day in range(3)]
        assert [(r.sent, r.failed, r.suppressed) for r in stats] == [(2, 1, 0), (2, 1, 0), (2, 1, 1)]
        bo = store.get_subscriber("bo@example.org")
        assert bo.status == "suppressed" and "3 hard bounces in a row (last: 550 5.1.1" in bo.suppressed_reason

        smtp.recipients_tried.clear()
        fourth = rounds.run(3)
        assert (fourth.sent, fourth.failed) == (2, 0)
        assert sorted(smtp.recipients_tried) == ["ada@example.org", "cy@example.org"]   # bo is not even tried
        assert smtp.delivered_to("ada@example.org") == smtp.delivered_to("cy@example.org") == 4
    store.close()


@pytest.mark.parametrize("refusal_delay", [0.0, 0.3])
def test_a_backlog_sent_in_one_flush_stops_at_the_bounce_that_suppresses(tmp_path, refusal_delay):
    """Over four SMTP connections: with a slow refusal the next digest to the same address is
    already taken when the suppressing bounce comes back, and must still not be sent."""
    with RefusingCatcher() as smtp:
        smtp.refusal_delay = refusal_delay
        rounds = DigestRounds(tmp_path, smtp.port)
        store = rounds.store
        for day in range(4):                     # four digests queued while the server was away
            rounds.titles.append(f"post{day}")
            store.apply_check("link", CheckInput(posts=[_post(t) for t in rounds.titles]), NOW + timedelta(days=day))
            compose_and_queue(store, DigestSettings(secret=b"k"), NOW + timedelta(days=day))
        smtp.refuse["bo@example.org"] = USER_UNKNOWN
        channel = make_channel("smtp", settings=SmtpSettings(host="127.0.0.1", port=smtp.port, security="none"))
        with channel:
            stats = flush_outbox(store, channel, NOW + timedelta(days=4), bounce_limit=3)
        assert (stats.sent, stats.failed, stats.suppressed) == (8, 3, 1)
        assert smtp.recipients_tried.count("bo@example.org") == 3
        assert store.outbox_stats(NOW)["pending"] == 0
    store.close()
    with sqlite3.connect(tmp_path / "state.db") as db:
        rows = db.execute("SELECT status, last_error FROM outbox WHERE to_addr = 'bo@example.org' ORDER BY id").fetchall()
    assert [status for status, _ in rows] == ["failed", "failed", "failed", "cancelled"]
    assert rows[-1][1] == f"suppressed: 3 hard bounces in a row (last: {USER_UNKNOWN})"


def test_refusals_of_the_message_or_a_bounce_run_broken_by_a_delivery_do_not_suppress(tmp_path):
    with RefusingCatcher() as smtp:
        rounds = DigestRounds(tmp_path, smtp.port)
        store = rounds.store
        smtp.refuse["cy@example.org"] = "552 5.3.4 Message size exceeds fixed maximum message size"
        for day, answer in enumerate((USER_UNKNOWN, USER_UNKNOWN, None, USER_UNKNOWN, USER_UNKNOWN)):
            smtp.refuse["bo@example.org"] = answer
            rounds.run(day)
        assert store.get_subscriber("cy@example.org").status == "active"     # five 552s: the message, not her
        bo = store.get_subscriber("bo@example.org")
        assert (bo.status, bo.bounces) == ("active", 2)
        assert smtp.delivered_to("bo@example.org") == 1
    store.close()


# -- the CLI, as an operator runs it ---------------------------------------------------------

def test_the_cli_suppresses_a_dead_address_shows_it_and_refuses_to_add_it_again(tmp_path, site, monkeypatch):
    from crawler.runtime import run
    from postwatch.app import App
    from postwatch.config import load_config
    from postwatch.web import WebEndpoint

    with RefusingCatcher() as smtp:
        smtp.refuse["bo@example.org"] = USER_UNKNOWN
        cli = Cli(write_config(tmp_path, site.blog_url, smtp.port))
        cli("subscribers", "add", "ada@example.org", check=True)
        cli("subscribers", "add", "bo@example.org", check=True)
        cli("check", check=True)
        for n in range(3):
            site.add_post(f"News {n}", body_paragraphs=[f"About news {n}."])
            cli("check", "--digest")
        assert smtp.delivered_to("ada@example.org") == 3 and smtp.recipients_tried.count("bo@example.org") == 3

        listed = cli("subscribers", "list", check=True).stdout.splitlines()
        [bo_line] = [i for i, line in enumerate(listed) if line.startswith("bo@example.org")]
        assert listed[bo_line].split()[1] == "suppressed"
        assert listed[bo_line + 1].strip().endswith(f"3 hard bounces in a row (last: {USER_UNKNOWN})")
        assert listed[-1] == "2 subscribers (1 active, 1 suppressed)"
        assert "subscribers: 2 (1 active, 1 suppressed)" in cli("status", check=True).stdout

        monkeypatch.setenv("POSTWATCH_SECRET", "test-secret")
        app = App.open(load_config(tmp_path / "postwatch.toml"))
        endpoint = WebEndpoint(app, "127.0.0.1", 0)
        run(endpoint.start)
        try:
            status, metrics = get(f"http://{endpoint.address}/metrics")
        finally:
            run(endpoint.stop)
            app.close()
        assert status == 200
        assert 'postwatch_subscribers{status="suppressed"} 1.0' in metrics
        assert 'postwatch_subscribers{status="active"} 1.0' in metrics

        site.add_post("News 3", body_paragraphs=["About news 3."])
        cli("check", "--digest", check=True)
        assert smtp.delivered_to("ada@example.org") == 4 and smtp.recipients_tried.count("bo@example.org") == 3

        refused = cli("subscribers", "add", "bo@example.org")
        assert refused.returncode == 1 and refused.stdout == ""
        assert refused.stderr.splitlines() == [
            "postwatch: bo@example.org: suppressed; not re-subscribed without their consent "
            "(with their new consent: --resubscribe)"]
        (tmp_path / "people.csv").write_text("email\nbo@example.org\n")
        imported = cli("subscribers", "import", "people.csv")
        assert imported.returncode == 1
        assert "people.csv:2: suppressed; not re-subscribed without their consent" in imported.stderr

        smtp.refuse.clear()                                   # her mailbox works again, and she asked
        cli("subscribers", "add", "bo@example.org", "--resubscribe", check=True)
        site.add_post("News 4", body_paragraphs=["About news 4."])
        cli("check", "--digest", check=True)
        assert smtp.delivered_to("bo@example.org") == 1
        assert cli("subscribers", "list", check=True).stdout.splitlines()[-1] == "2 subscribers (2 active)"


