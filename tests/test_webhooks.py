"""The webhook channel against a real receiver on 127.0.0.1 (support.webhook_receiver),
which checks every request's signature as a receiver would: signed JSON of the events through
the same outbox as email, retried on 500/429/connection errors (honouring Retry-After), failed
for good on another 4xx, redirects to another host not followed, and the signature check that
refuses a tampered body, a stale timestamp and a replayed delivery."""
from __future__ import annotations

import json
import re
import sqlite3
import time
from datetime import datetime, timezone

import pytest

from digest.webhook import SCHEMA, InvalidSignature, sign, verify_signature
from support.harness import Cli, free_port, wait_for, write_config
from support.webhook_receiver import Answer, WebhookReceiver


def webhook_cli(tmp_path, site, smtp_port: int | None = None, *, extra: str = "") -> Cli:
    config = write_config(tmp_path, site.blog_url, smtp_port, extra=extra)
    config.write_text(config.read_text().replace("[digest]\n", '[digest]\nretry_after = "1s"\n'))
    return Cli(config)


def subscribe_hook(cli: Cli, url: str, *options: str) -> str:
    """Subscribe the webhook at `url` (after each check); the signing secret the command printed."""
    added = cli("subscribers", "add", url, "--cadence", "immediate", *options, check=True)
    return re.search(r"webhook signing secret \(give it to the receiver\): (whsec_\S+)", added.stdout).group(1)


@pytest.fixture
def hook(tmp_path, site):
    """(cli, receiver, url) with a baseline recorded and the receiver subscribed."""
    secrets: dict[str, str] = {}
    with WebhookReceiver(lambda url: secrets["hook"]) as receiver:
        cli = webhook_cli(tmp_path, site)
        cli("check", check=True)
        url = receiver.url("/hook")
        secrets["hook"] = subscribe_hook(cli, url)
        yield cli, receiver, url


def outbox(tmp_path) -> list[tuple]:
    with sqlite3.connect(tmp_path / "state.db") as db:
        return db.execute("SELECT channel, status, attempts, last_error, next_attempt_at FROM outbox ORDER BY id").fetchall()


def test_the_receiver_gets_signed_json_of_the_events(hook, site, tmp_path):
    cli, receiver, url = hook
    cli("check", "--full", check=True)           # the post pages read once: their content is known
    new = site.add_post("Webhooks reach other systems", body_paragraphs=["A JSON POST, signed."])
    edited = site.posts[1]
    site.edit_post(edited.slug, body_paragraphs=["This paragraph replaces the whole article."])
    cli("check", "--full", check=True)
    cli("check", "--full", check=True)           # an edit counts once a second fetch confirms it
    done = cli("digest")

    assert done.returncode == 0, done.stderr
    assert "1 composed, 1 delivered by webhook, 0 waiting for a retry, 0 failed" in done.stdout
    [delivery] = receiver.requests
    assert delivery.verdict == "accepted" and delivery.status == 200
    assert delivery.headers["Content-Type"] == "application/json"
    assert delivery.headers["Postwatch-Schema"] == SCHEMA
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", delivery.headers["Postwatch-Signature"])
    document = delivery.json
    assert document["schema"] == SCHEMA and document["id"] == delivery.headers["Postwatch-Delivery"]
    assert document["site"] == "postwatch"
    kinds = {e["title"]: e["kind"] for e in document["events"]}
    assert kinds == {new.title: "new", edited.title: "updated"}
    [update] = [e for e in document["events"] if e["kind"] == "updated"]
    assert "This paragraph replaces the whole article." in json.dumps(update["diff"])
    [event] = [e for e in document["events"] if e["title"] == new.title]
    assert event["url"] == site.post_url(new) and event["source"] == "link" and event["source_title"] == "Liberty in North Korea"
    assert event["detected"].endswith("Z") and event["seq"] > 0
    status = cli("status", check=True).stdout
    assert "webhook: 0 pending, 1 sent, 0 failed" in status
    # No email was written for the webhook subscriber.
    assert not (tmp_path / "outbox").exists()


def test_the_receivers_check_refuses_a_replay_a_stale_timestamp_and_a_changed_body(hook, site):
    cli, receiver, url = hook
    site.add_post("Sent once, replayed twice", body_paragraphs=["The receiver keeps the ids it accepted."])
    cli("check", check=True)
    cli("digest", check=True)
    [original] = receiver.requests
    secret = receiver.secret_for(url)
    signed = int(original.headers["Postwatch-Signature"].split(",")[0][2:])

    # The same request again (a replay by whoever captured it): its id was accepted already.
    import urllib.request

    request = urllib.request.Request(url, data=original.body, method="POST",
                                     headers={k: v for k, v in original.headers.items() if k.lower() != "host"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.status == 200                    # acknowledged, and nothing done with it
    assert receiver.requests[-1].verdict.startswith("replayed: delivery dlv_")
    assert len(receiver.accepted) == 1

    # An old timestamp: refused once it is further from the receiver's clock than its tolerance.
    header = original.headers["Postwatch-Signature"]
    assert verify_signature(secret, header, original.body, now=signed + 299) == signed
    with pytest.raises(InvalidSignature, match="a replayed request"):
        verify_signature(secret, header, original.body, now=signed + 301)
    # Re-signing an old body with a new timestamp needs the secret; another secret or another body fails.
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_signature("whsec_someone-else", header, original.body, now=signed)
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_signature(secret, header, original.body.replace(b"replayed", b"REPLAYED"), now=signed)
    with pytest.raises(InvalidSignature, match="no timestamp"):
        verify_signature(secret, header.split(",")[1], original.body, now=signed)
    # During a rotation a header may carry two signatures; one that matches is enough.
    rotated = f"{sign('whsec_old', original.body, signed)},{header.split(',')[1]}"
    assert verify_signature(secret, rotated, original.body, now=signed) == signed


def test_postwatch_webhook_verify_checks_a_saved_delivery(hook, site, tmp_path):
    cli, receiver, url = hook
    site.add_post("Checked from the command line", body_paragraphs=["postwatch webhook verify."])
    cli("check", check=True)
    cli("digest", check=True)
    [delivery] = receiver.requests
    (tmp_path / "body.json").write_bytes(delivery.body)
    (tmp_path / "tampered.json").write_bytes(delivery.body.replace(b"Checked", b"Chequed"))
    secret = cli("webhook", "secret", url, check=True).stdout.strip()
    assert secret == receiver.secret_for(url)

    import os
    import subprocess
    import sys

    def verify(body: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "postwatch", "webhook", "verify", body, "--signature",
                               delivery.headers["Postwatch-Signature"]], capture_output=True, text=True,
                              env={**os.environ, "POSTWATCH_WEBHOOK_RECEIVER_SECRET": secret}, cwd=tmp_path)

    good = verify("body.json")
    assert good.returncode == 0 and good.stdout.startswith("signature ok: signed ")
    bad = verify("tampered.json")
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == ["postwatch: signature refused: the signature does not match the body "
                                               "(another secret, or the body was changed)"]


def test_a_500_then_a_200_delivers_exactly_once_after_a_retry(hook, site, tmp_path):
    cli, receiver, url = hook
    site.add_post("Refused with 500, then taken", body_paragraphs=["Retried through the outbox."])
    cli("check", check=True)
    receiver.answers.append(500)

    first = cli("digest")
    assert first.returncode == 1
    assert "0 delivered" in first.stdout and "1 waiting for a retry" in first.stdout
    [(channel, status, attempts, error, _)] = outbox(tmp_path)
    assert (channel, status, attempts, error) == ("webhook", "pending", 1, "HTTP 500 Internal Server Error")

    time.sleep(1.5)                                      # [digest] retry_after = 1s (x0.9-1.1)
    second = cli("digest")
    assert second.returncode == 0, second.stderr
    assert "1 delivered" in second.stdout
    third = cli("digest", check=True)                    # nothing left to send
    assert "0 delivered" in third.stdout

    assert [d.verdict for d in receiver.requests] == ["answered 500", "accepted"]
    assert receiver.requests[0].json["id"] == receiver.requests[1].json["id"]     # the same delivery, retried
    assert receiver.accepted_count == 1
    assert [row[:3] for row in outbox(tmp_path)] == [("webhook", "sent", 2)]


def test_a_400_fails_for_good_and_is_not_retried(hook, site, tmp_path):
    cli, receiver, url = hook
    site.add_post("Refused with 400", body_paragraphs=["A 4xx other than 408 and 429 is permanent."])
    cli("check", check=True)
    receiver.answers.append(400)

    first = cli("digest")
    assert first.returncode == 1 and "1 failed" in first.stdout
    assert "webhook to http://127.0.0.1" in first.stderr and "failed permanently: HTTP 400 Bad Request" in first.stderr
    time.sleep(1.5)
    assert "0 delivered" in cli("digest").stdout
    assert len(receiver.requests) == 1
    assert [row[:4] for row in outbox(tmp_path)] == [("webhook", "failed", 1, "HTTP 400 Bad Request")]
    status = cli("status").stdout
    assert "webhook: 0 pending, 0 sent, 1 failed" in status
    assert "subscribers: 1 (1 active)" in status          # a refused request is not a receiver that is gone


def test_a_receiver_that_answers_410_gone_is_suppressed_like_a_hard_bounce(tmp_path, site):
    secret: dict[str, str] = {}
    with WebhookReceiver(lambda url: secret["value"]) as receiver:
        cli = webhook_cli(tmp_path, site)
        cli.config.write_text(cli.config.read_text().replace("[digest]\n", "[digest]\nbounce_limit = 2\n"))
        cli("check", check=True)
        url = receiver.url("/hook")
        secret["value"] = subscribe_hook(cli, url)
        for n, answer in enumerate((410, 404)):
            site.add_post(f"Nobody reads this {n}", body_paragraphs=["The receiver was taken down."])
            cli("check", check=True)
            receiver.answers.append(answer)
            assert "1 failed" in cli("digest").stdout
        site.add_post("Not sent at all", body_paragraphs=["The receiver is suppressed."])
        cli("check", check=True)
        assert "0 composed" in cli("digest").stdout
        assert len(receiver.requests) == 2
        listed = cli("subscribers", "list").stdout
        assert f"{url}" in listed and "suppressed" in listed
        assert "2 hard bounces in a row (last: HTTP 404 Not Found)" in listed


def test_429_waits_as_long_as_retry_after_says(hook, site, tmp_path):
    cli, receiver, url = hook
    site.add_post("Too many requests", body_paragraphs=["Retry-After: 3600"])
    cli("check", check=True)
    receiver.answers.append(Answer(429, {"Retry-After": "3600"}))
    before = datetime.now(timezone.utc).timestamp()

    assert "1 waiting for a retry" in cli("digest").stdout
    [(_, status, attempts, error, next_attempt)] = outbox(tmp_path)
    assert (status, attempts, error) == ("pending", 1, "HTTP 429 Too Many Requests")
    waits = datetime.fromisoformat(next_attempt).replace(tzinfo=timezone.utc).timestamp() - before
    assert 3590 < waits < 3700                            # not [digest] retry_after's 1 s
    time.sleep(1.5)
    assert "0 delivered" in cli("digest").stdout
    assert len(receiver.requests) == 1


def test_a_redirect_to_another_host_is_not_followed_one_on_the_same_host_is(tmp_path, site):
    secret: dict[str, str] = {}
    with WebhookReceiver(lambda url: secret["value"]) as receiver, \
            WebhookReceiver(lambda url: secret["value"], host="127.0.0.2") as elsewhere:
        cli = webhook_cli(tmp_path, site)
        cli("check", check=True)
        secret["value"] = subscribe_hook(cli, receiver.url("/old"))
        site.add_post("Moved once", body_paragraphs=["307 to /new on the same host."])
        cli("check", check=True)
        receiver.answers.append(Answer(307, {"Location": "/new"}))
        assert "1 delivered" in cli("digest", check=True).stdout
        assert [(d.path, d.verdict) for d in receiver.requests] == [("/old", "answered 307"), ("/new", "accepted")]

        site.add_post("Moved away", body_paragraphs=["308 to another host: not followed."])
        cli("check", check=True)
        receiver.answers.append(Answer(308, {"Location": elsewhere.url("/stolen")}))
        refused = cli("digest")
        assert refused.returncode == 1 and "1 failed" in refused.stdout
        assert f"redirected to {elsewhere.url('/stolen')}, another host" in refused.stderr
        assert elsewhere.requests == []
        assert len(receiver.requests) == 3


def test_an_unreachable_receiver_is_retried(tmp_path, site):
    cli = webhook_cli(tmp_path, site)
    cli("check", check=True)
    url = f"http://127.0.0.1:{free_port()}/nobody-listens"
    subscribe_hook(cli, url)
    site.add_post("Nobody home", body_paragraphs=["Connection refused is temporary."])
    cli("check", check=True)
    result = cli("digest")
    assert result.returncode == 1 and "1 waiting for a retry" in result.stdout
    [(channel, status, attempts, error, _)] = outbox(tmp_path)
    assert (channel, status, attempts) == ("webhook", "pending", 1)
    assert error.startswith(f"cannot reach http://127.0.0.1:") and "refused" in error.lower()


def test_email_and_webhook_subscribers_each_get_their_own(tmp_path, site, smtp):
    secrets: dict[str, str] = {}
    with WebhookReceiver(lambda url: secrets["hook"]) as receiver:
        cli = webhook_cli(tmp_path, site, smtp.port)
        cli("check", check=True)
        secrets["hook"] = subscribe_hook(cli, receiver.url("/hook"))
        cli("subscribers", "add", "ada@example.org", "--cadence", "immediate", check=True)
        site.add_post("Both channels", body_paragraphs=["One email, one webhook."])
        cli("check", check=True)
        done = cli("digest", check=True)
        assert f"2 composed, 2 delivered (1 via SMTP 127.0.0.1:{smtp.port}, 1 by webhook)" in done.stdout
        assert len(smtp.messages) == 1 and smtp.messages[0]["To"] == "ada@example.org"
        assert [e["title"] for e in receiver.accepted[0].json["events"]] == ["Both channels"]
        status = cli("status").stdout
        assert "outbox: 0 pending, 2 sent, 0 failed" in status
        assert "  email: 0 pending, 1 sent, 0 failed" in status and "  webhook: 0 pending, 1 sent, 0 failed" in status
        listed = cli("subscribers", "list").stdout
        assert receiver.url("/hook") in listed and "ada@example.org" in listed


def test_a_webhook_address_must_be_a_usable_url(tmp_path, site):
    cli = webhook_cli(tmp_path, site)
    refused = cli("subscribers", "add", "https://user:pw@hooks.example.org/x")
    assert refused.returncode == 2
    assert refused.stderr.strip() == ("postwatch: webhook URL 'https://user:pw@hooks.example.org/x' carries a user "
                                      "name or password; receivers check the signature instead")
    assert cli("subscribers", "add", "http://").returncode == 2
    assert cli("webhook", "secret", "ada@example.org").returncode == 2


def test_retry_after_is_read_as_seconds_or_as_an_http_date_and_capped_at_a_day():
    from digest.delivery import retry_after_seconds

    now = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc).timestamp()
    assert retry_after_seconds("120", now) == 120.0
    assert retry_after_seconds("Mon, 02 Mar 2026 09:30:00 GMT", now) == 1800.0
    assert retry_after_seconds("Mon, 02 Mar 2026 08:00:00 GMT", now) == 0.0          # already past
    assert retry_after_seconds("9999999", now) == 86_400.0
    assert retry_after_seconds("soon", now) is None and retry_after_seconds(None, now) is None
