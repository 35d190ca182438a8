"""The daemon's inbound mail listener against `postwatch run`: a VERP return path on every digest,
RFC 3464 bounces to it counted as hard bounces, mailed unsubscribes, and forged or foreign
recipients refused. Real servers throughout: the replica, aiosmtpd catching the digests, and
smtplib talking to the daemon's own aiosmtpd."""
from __future__ import annotations

import re
import smtplib

import pytest

from support.harness import Cli, Daemon, free_port, wait_for, write_config

DSN = """From: MAILER-DAEMON@mx.example.net\r
To: {to}\r
Subject: Undelivered Mail Returned to Sender\r
MIME-Version: 1.0\r
Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r
\r
--B\r
Content-Type: text/plain\r
\r
Your message could not be delivered.\r
--B\r
Content-Type: message/delivery-status\r
\r
Reporting-MTA: dns; mx.example.net\r
\r
Final-Recipient: rfc822; {rcpt}\r
Action: {action}\r
Status: {status}\r
Diagnostic-Code: smtp; {diagnostic}\r
\r
--B--\r
"""


def send(port: int, to: str, body: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail("MAILER-DAEMON@mx.example.net", [to], body.encode())


def status_of(cli: Cli, email: str) -> str:
    line = next(l for l in cli("subscribers", "list", check=True).stdout.splitlines() if l.startswith(email))
    return line.split()[1]


def test_bounces_by_verp_and_mailed_unsubscribes_reach_their_subscriber_and_forgeries_change_nothing(tmp_path, site, smtp):
    port, inbound = free_port(), free_port()
    config = write_config(tmp_path, site.blog_url, smtp.port, listen_port=port, interval="2s",
                          extra=f'\n[inbound]\nlisten = "127.0.0.1:{inbound}"\n')
    cli = Cli(config)
    cli("check", check=True)
    for email in ("ada@example.org", "bo@example.org"):
        cli("subscribers", "add", email, "--cadence", "immediate", check=True)
    with Daemon(cli, port) as daemon:
        site.add_post("A post for the return paths", body_paragraphs=["Two digests."])
        wait_for(lambda: len(smtp.messages) >= 2, timeout=60, what="two digests")
        by_rcpt = {rcpts[0]: (mail_from, message) for (mail_from, rcpts), message in zip(smtp.envelopes, smtp.messages)}
        verp = {email: by_rcpt[email][0] for email in ("ada@example.org", "bo@example.org")}
        for email, return_path in verp.items():
            assert re.fullmatch(r"bounces\+\d+\.[0-9a-f]{20}@postwatch\.test", return_path), return_path
        assert verp["ada@example.org"] != verp["bo@example.org"]
        mailto = re.search(r"<mailto:([^?>]+)", str(by_rcpt["ada@example.org"][1]["List-Unsubscribe"])).group(1)
        assert re.fullmatch(r"unsubscribe\+\d+\.[0-9a-f]{20}@postwatch\.test", mailto)

        # Forged tokens, another subscriber's id with a made-up MAC, and other domains: refused at RCPT TO.
        forged = re.sub(r"\.[0-9a-f]{20}@", "." + "0" * 20 + "@", verp["bo@example.org"])
        for recipient in (forged, "bounces+1@postwatch.test", "someone@example.org", mailto.replace("postwatch.test", "evil.example")):
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                send(inbound, recipient, DSN.format(to=recipient, rcpt="bo@example.org", action="failed", status="5.1.1",
                                                    diagnostic="550 5.1.1 User unknown"))
        # A delay, and a refusal of the message rather than the address: no hard bounce.
        send(inbound, verp["bo@example.org"], DSN.format(to=verp["bo@example.org"], rcpt="bo@example.org", action="delayed",
                                                         status="4.4.1", diagnostic="451 4.4.1 try later"))
        send(inbound, verp["bo@example.org"], DSN.format(to=verp["bo@example.org"], rcpt="bo@example.org", action="failed",
                                                         status="5.7.1", diagnostic="554 5.7.1 spam"))
        assert status_of(cli, "bo@example.org") == "active"
        for _ in range(3):                                     # [digest] bounce_limit, 3 by default
            send(inbound, verp["bo@example.org"], DSN.format(to=verp["bo@example.org"], rcpt="bo@example.org",
                                                             action="failed", status="5.1.1",
                                                             diagnostic="550 5.1.1 <bo@example.org>: User unknown"))
        assert status_of(cli, "bo@example.org") == "suppressed"
        assert "3 hard bounces in a row (last: 550 5.1.1 <bo@example.org>: User unknown)" in \
            cli("subscribers", "show", "bo@example.org", check=True).stdout
        assert status_of(cli, "ada@example.org") == "active"

        send(inbound, mailto, f"From: ada@example.org\r\nTo: {mailto}\r\nSubject: unsubscribe\r\n\r\nunsubscribe\r\n")
        assert status_of(cli, "ada@example.org") == "unsubscribed"
        assert daemon.stop() == 0


def test_without_a_listener_no_return_path_names_a_subscriber(tmp_path, site, smtp):
    config = write_config(tmp_path, site.blog_url, smtp.port)
    cli = Cli(config)
    cli("check", check=True)
    cli("subscribers", "add", "ada@example.org", check=True)
    site.add_post("Plain return path", body_paragraphs=["One digest."])
    cli("check", check=True)
    cli("digest", check=True)
    assert smtp.envelopes[0][0] == "digest@postwatch.test"
    assert "mailto:" not in str(smtp.messages[0]["List-Unsubscribe"])


def subscriber_id(tmp_path, email: str) -> int:
    import sqlite3

    with sqlite3.connect(tmp_path / "state.db") as db:
        return db.execute("SELECT id FROM subscribers WHERE lower(email) = ?", (email,)).fetchone()[0]


def test_mailed_addresses_stop_working_after_a_resubscription_and_after_forget(tmp_path, site, smtp):
    """Issue 29: the mailto and VERP addresses are bound to the subscription, as the https links
    are, and an erased subscriber's id is never handed to the next one."""
    port, inbound = free_port(), free_port()
    config = write_config(tmp_path, site.blog_url, smtp.port, listen_port=port, interval="2s",
                          extra=f'\n[inbound]\nlisten = "127.0.0.1:{inbound}"\n')
    cli = Cli(config)
    cli("check", check=True)
    for email in ("ada@example.org", "cy@example.org"):          # cy last: the highest id
        cli("subscribers", "add", email, "--cadence", "immediate", check=True)
    cy_id = subscriber_id(tmp_path, "cy@example.org")
    with Daemon(cli, port) as daemon:
        site.add_post("Old addresses", body_paragraphs=["Their tokens."])
        wait_for(lambda: len(smtp.messages) >= 2, timeout=60, what="two digests")
        by_rcpt = {rcpts[0]: (mail_from, message) for (mail_from, rcpts), message in zip(smtp.envelopes, smtp.messages)}
        verp = {email: by_rcpt[email][0] for email in ("ada@example.org", "cy@example.org")}
        mailto = {email: re.search(r"<mailto:([^?>]+)", str(by_rcpt[email][1]["List-Unsubscribe"])).group(1)
                  for email in ("ada@example.org", "cy@example.org")}

        def hard_bounces(to: str, rcpt: str) -> None:
            for _ in range(3):
                send(inbound, to, DSN.format(to=to, rcpt=rcpt, action="failed", status="5.1.1",
                                             diagnostic="550 5.1.1 User unknown"))

        # Unsubscribe by mail, come back: the old mailto and return path no longer reach her.
        send(inbound, mailto["ada@example.org"], "Subject: unsubscribe\r\n\r\nunsubscribe\r\n")
        assert status_of(cli, "ada@example.org") == "unsubscribed"
        cli("subscribers", "add", "ada@example.org", "--resubscribe", "--cadence", "immediate", check=True)
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            send(inbound, mailto["ada@example.org"], "Subject: unsubscribe\r\n\r\nunsubscribe\r\n")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            hard_bounces(verp["ada@example.org"], "ada@example.org")
        assert status_of(cli, "ada@example.org") == "active"

        # Erased on request; the next person added gets an id of their own, and cy's old
        # addresses act on nobody.
        cli("subscribers", "forget", "cy@example.org", check=True)
        cli("subscribers", "add", "dee@example.org", "--cadence", "immediate", check=True)
        assert subscriber_id(tmp_path, "dee@example.org") != cy_id
        for to in (mailto["cy@example.org"], verp["cy@example.org"]):
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                send(inbound, to, DSN.format(to=to, rcpt="cy@example.org", action="failed", status="5.1.1",
                                             diagnostic="550 5.1.1 User unknown"))
        assert status_of(cli, "dee@example.org") == "active"

        # The new subscription's own addresses work.
        site.add_post("New addresses", body_paragraphs=["Fresh tokens."])
        fresh = wait_for(lambda: [m for m in smtp.messages if str(m["To"]) == "ada@example.org"
                                  and "New addresses" in m.get_body(("plain",)).get_content()], timeout=60,
                         what="ada's second digest")[0]
        new_mailto = re.search(r"<mailto:([^?>]+)", str(fresh["List-Unsubscribe"])).group(1)
        assert new_mailto != mailto["ada@example.org"]
        send(inbound, new_mailto, "Subject: unsubscribe\r\n\r\nunsubscribe\r\n")
        assert status_of(cli, "ada@example.org") == "unsubscribed"
        assert daemon.stop() == 0
