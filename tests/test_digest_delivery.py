"""Digests through a real SMTP server (aiosmtpd on loopback): exactly once, whatever it answers."""
from __future__ import annotations

import datetime as dt
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy

import pytest
from markupsafe import escape

from crawler.items import PostItem
from digest.compose import build_alert, build_message
from digest.delivery import make_channel
from digest.sender import compose_and_queue, flush_outbox
from digest.settings import DigestSettings, SmtpSettings
from digest.tokens import make_token, verify_token
from support.harness import free_port
from postwatch.testing.mailcatcher import MailCatcher
from state import CheckInput, SourceRecord, Store

NOW = datetime(2026, 11, 2, 8, 0, tzinfo=timezone.utc)
SETTINGS = DigestSettings(from_addr="LiNK watch <digest@postwatch.test>", list_id="postwatch.postwatch.test",
                          site_name="postwatch", unsubscribe_base_url="https://watch.example.org/unsubscribe",
                          unsubscribe_mailto="unsubscribe@postwatch.test", secret=b"s3cret",
                          source_titles={"link": "Liberty in North Korea"})


def item(n: int, title: str | None = None, body: str | None = None) -> PostItem:
    return PostItem(url=f"https://libertyinnorthkorea.org/blog/post-{n}", title=title or f"Rescue story {n}",
                    published=NOW - timedelta(days=n), body_html=body or f"<p>Story {n} of a journey to freedom.</p>",
                    summary=None, origin="page")


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "state.db"))
    s.sync_sources([SourceRecord(name="link", url="https://libertyinnorthkorea.org/blog", kind="link")])
    s.apply_check("link", CheckInput(posts=[item(100)], baseline=True), NOW)
    yield s
    s.close()


def publish(store: Store, *items: PostItem) -> None:
    result = store.apply_check("link", CheckInput(posts=list(items) + [item(100)]), NOW)
    assert not result.held


def queue_one_digest_each(store: Store, readers: int) -> None:
    for n in range(readers):
        store.add_subscriber(f"reader{n}@example.org")
    publish(store, item(1))
    compose_and_queue(store, SETTINGS, NOW)


def smtp_channel(port: int, **kwargs):
    return make_channel("smtp", settings=SmtpSettings(host="127.0.0.1", port=port, security="none", timeout=5, **kwargs))


def deliver(store, port, now=NOW, **kwargs):
    with smtp_channel(port, **kwargs) as channel:
        return flush_outbox(store, channel, now)


def test_smtp_down_then_up_delivers_each_digest_exactly_once(store, tmp_path):
    for n in range(5):
        store.add_subscriber(f"reader{n}@example.org")
    publish(store, item(1), item(2))
    assert len(compose_and_queue(store, SETTINGS, NOW)) == 5
    port = free_port()
    down = deliver(store, port)
    assert (down.sent, down.retried) == (0, 5)
    assert store.outbox_stats(NOW)["pending"] == 5
    assert compose_and_queue(store, SETTINGS, NOW) == []            # nothing composed twice
    with MailCatcher(port=port) as smtp:
        assert deliver(store, port, NOW).sent == 0                 # not due yet: backoff
        later = NOW + timedelta(hours=2)
        assert deliver(store, port, later).sent == 5
        assert deliver(store, port, later + timedelta(hours=2)).sent == 0
        ids = smtp.message_ids()
    assert len(ids) == len(set(ids)) == 5


@pytest.mark.parametrize("connections", [1, 4])
def test_a_451_in_the_middle_of_a_batch_retries_the_rest_and_doubles_nothing(store, connections):
    queue_one_digest_each(store, 6)
    with MailCatcher() as smtp:
        smtp.answers = [None, None, "451 4.3.0 Temporary local problem"]
        first = deliver(store, smtp.port, connections=connections)
        assert (first.sent, first.retried) == (5, 1)
        second = deliver(store, smtp.port, NOW + timedelta(hours=2), connections=connections)
        assert second.sent == 1
        ids = smtp.message_ids()
    assert len(ids) == len(set(ids)) == 6
    assert sorted(to for _, tos in smtp.envelopes for to in tos) == sorted(f"reader{n}@example.org" for n in range(6))


def test_a_421_closes_the_batch_for_later(store):
    queue_one_digest_each(store, 4)
    with MailCatcher() as smtp:
        smtp.answers = [None, "421 4.3.2 Shutting down"]
        first = deliver(store, smtp.port, connections=1)
        assert (first.sent, first.retried) == (1, 3)
        assert deliver(store, smtp.port, NOW + timedelta(hours=2), connections=1).sent == 3
        assert len(set(smtp.message_ids())) == len(smtp.message_ids()) == 4


def test_a_421_on_one_of_several_connections_stops_them_all_and_doubles_nothing(store):
    queue_one_digest_each(store, 40)
    with MailCatcher() as smtp:
        smtp.answers = [None] * 5 + ["421 4.3.2 Shutting down"]
        first = deliver(store, smtp.port, connections=4)
        # What was already in flight on the other three connections may finish; nothing more starts.
        assert 5 <= first.sent <= 5 + 3 and first.sent + first.retried == 40
        assert deliver(store, smtp.port, NOW + timedelta(hours=2), connections=4).sent == 40 - first.sent
        ids = smtp.message_ids()
    assert len(ids) == len(set(ids)) == 40


def test_a_550_is_permanent_for_that_address_only(store):
    store.add_subscriber("gone@example.org")
    store.add_subscriber("here@example.org")
    publish(store, item(1))
    compose_and_queue(store, SETTINGS, NOW)
    with MailCatcher() as smtp:
        smtp.answers = ["550 5.1.1 No such user"]
        stats = deliver(store, smtp.port)
        assert (stats.sent, stats.failed, stats.retried) == (1, 1, 0)
        assert deliver(store, smtp.port, NOW + timedelta(days=1)).sent == 0
    assert store.outbox_stats(NOW)["failed"] == 1


def test_internationalised_addresses_travel_by_idna_and_smtputf8(store):
    store.add_subscriber("ada@bücher.example")
    store.add_subscriber("jörg@example.org")
    publish(store, item(1))
    compose_and_queue(store, SETTINGS, NOW)
    with MailCatcher() as smtp:       # aiosmtpd's Controller offers SMTPUTF8 unless told not to
        assert deliver(store, smtp.port).sent == 2
        by_rcpt = {rcpt[0]: message for message, (_, rcpt) in zip(smtp.messages, smtp.envelopes)}
    assert sorted(by_rcpt) == ["ada@xn--bcher-kva.example", "jörg@example.org"]
    assert by_rcpt["jörg@example.org"]["To"] == "jörg@example.org"
    assert by_rcpt["ada@xn--bcher-kva.example"]["To"] == "ada@xn--bcher-kva.example"
    assert "Rescue story 1" in by_rcpt["jörg@example.org"].get_body(("plain",)).get_content()


def test_a_server_without_smtputf8_refuses_only_the_utf8_address_with_a_clear_reason(store, caplog):
    store.add_subscriber("jörg@example.org")
    store.add_subscriber("bo@example.org")
    publish(store, item(1))
    compose_and_queue(store, SETTINGS, NOW)
    with MailCatcher(enable_SMTPUTF8=False) as smtp:
        stats = deliver(store, smtp.port)
        assert [rcpt for _, rcpt in smtp.envelopes] == [["bo@example.org"]]
    assert (stats.sent, stats.failed, stats.retried) == (1, 1, 0)
    assert "jörg@example.org" in caplog.text and "SMTPUTF8" in caplog.text


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(dt.datetime.now(dt.timezone.utc) - timedelta(days=1))
            .not_valid_after(dt.datetime.now(dt.timezone.utc) + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cafile=str(cert_path))
    return server, client


def test_starttls_and_auth(store, tmp_path):
    from aiosmtpd.smtp import AuthResult

    server_tls, client_tls = _self_signed(tmp_path)
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == b"postwatch" and auth_data.password == b"pa55"
        logins.append(ok)
        return AuthResult(success=ok)

    store.add_subscriber("ada@example.org")
    publish(store, item(1))
    compose_and_queue(store, SETTINGS, NOW)
    with MailCatcher(tls_context=server_tls, require_starttls=True, authenticator=authenticator, auth_required=True) as smtp:
        channel = make_channel("smtp", settings=SmtpSettings(host="127.0.0.1", port=smtp.port, security="starttls",
                                                             username="postwatch", password="wrong", ssl_context=client_tls,
                                                             timeout=3))
        with channel:
            assert flush_outbox(store, channel, NOW).retried == 1        # bad password: retried later, not lost
        channel = make_channel("smtp", settings=SmtpSettings(host="127.0.0.1", port=smtp.port, security="starttls",
                                                             username="postwatch", password="pa55", ssl_context=client_tls))
        with channel:
            assert flush_outbox(store, channel, NOW + timedelta(hours=2)).sent == 1
        assert len(smtp.messages) == 1
    assert logins[-1] is True and False in logins


def test_a_tls_failure_is_retried_not_lost(store, tmp_path):
    server_tls, _ = _self_signed(tmp_path)
    store.add_subscriber("ada@example.org")
    publish(store, item(1))
    compose_and_queue(store, SETTINGS, NOW)
    with MailCatcher(tls_context=server_tls, require_starttls=True) as smtp:
        untrusting = make_channel("smtp", settings=SmtpSettings(host="127.0.0.1", port=smtp.port, security="starttls"))
        with untrusting:
            stats = flush_outbox(store, untrusting, NOW)
        assert stats.retried == 1 and smtp.messages == []
    assert store.outbox_stats(NOW)["pending"] == 1


def test_headers_one_click_unsubscribe_and_no_header_injection(store):
    subscriber = store.add_subscriber("ada@example.org")
    hostile = "Breaking\r\nBcc: victim@example.org\r\nX-Injected: yes — 北朝鮮 «news»"
    publish(store, item(1, title=hostile))
    compose_and_queue(store, SETTINGS, NOW)
    with MailCatcher() as smtp:
        deliver(store, smtp.port)
        [message] = smtp.messages
        [(_, recipients)] = smtp.envelopes
    assert recipients == ["ada@example.org"]
    assert message["X-Injected"] is None and message["Bcc"] is None
    assert "北朝鮮" in message["Subject"] or "北朝鮮" in message.get_body(("plain",)).get_content()
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https, mailto = [part.strip(" <>") for part in message["List-Unsubscribe"].split(",")]
    assert https.startswith("https://watch.example.org/unsubscribe?token=") and mailto.startswith("mailto:unsubscribe@postwatch.test")
    assert message["List-Id"] == "postwatch <postwatch.postwatch.test>"
    assert message["Message-ID"].endswith("@postwatch.test>") and message["Date"]
    token = urllib.parse.unquote(https.split("token=")[1])
    assert verify_token(token, SETTINGS.secret, lambda i: subscriber) == subscriber.id
    assert message.get_content_type() == "multipart/alternative"


def test_message_ids_are_deterministic_per_subscriber_and_digest(store):
    subscriber = store.add_subscriber("ada@example.org")
    publish(store, item(1))
    events = store.pending_events(subscriber)
    first = build_message(subscriber, events, SETTINGS, NOW)
    again = build_message(subscriber, events, SETTINGS, NOW + timedelta(minutes=5))
    other = build_message(store.add_subscriber("bo@example.org"), events, SETTINGS, NOW)
    assert first.message_id == again.message_id != other.message_id


def test_each_subscriber_gets_a_well_formed_message_with_their_own_link(store):
    subscribers = [store.add_subscriber(f"reader{n}@example.org") for n in range(3)]
    publish(store, item(1, title="Défense des réfugiés — " + "long title " * 12))
    composed = [build_message(s, store.pending_events(s), SETTINGS, NOW) for s in subscribers]
    for subscriber, message in zip(subscribers, composed):
        lines = message.raw.split(b"\r\n")
        assert b"\n" not in message.raw.replace(b"\r\n", b"") and max(map(len, lines)) <= 998
        parsed = message_from_bytes(message.raw, policy=policy.default)
        assert not parsed.defects and not any(part.defects for part in parsed.walk())
        assert parsed["To"] == subscriber.email and parsed["Message-ID"] == message.message_id
        assert parsed["Subject"] == "1 new — Liberty in North Korea"
        https = parsed["List-Unsubscribe"].split(",")[0].strip(" <>")
        text, html = (parsed.get_body((kind,)).get_content() for kind in ("plain", "html"))
        assert https in text and str(escape(https)) in html and subscriber.email in text
        assert "Défense des réfugiés" in text and "pw-slot" not in text + html
    assert len({m.message_id for m in composed}) == len({m.raw for m in composed}) == 3


def test_hostile_source_html_never_reaches_the_email(store):
    store.add_subscriber("ada@example.org")
    hostile = ('<p>Hello <script>alert(1)</script><img src=x onerror="alert(2)">'
               '<a href="javascript:alert(3)">click</a> <a href="https://ok.example/">fine</a></p>'
               '<iframe src="https://evil.example/"></iframe><style>body{display:none}</style>'
               '<p style="width:expression(alert(4))" onclick="alert(5)">styled</p>'
               '<form action="https://evil.example/"><input name=p></form><a href="data:text/html;base64,PHNjcmlwdD4=">data</a>'
               '<svg onload="alert(6)"></svg><object data="x.swf"></object>')
    publish(store, item(1, body=hostile))
    compose_and_queue(store, SETTINGS, NOW)
    with MailCatcher() as smtp:
        deliver(store, smtp.port)
        [message] = smtp.messages
    html = message.get_body(("html",)).get_content().lower()
    for bad in ("<script", "alert(", "javascript:", "<iframe", "onerror", "onclick", "onload", "expression(",
                "<form", "data:text", "<svg", "<object", "evil.example"):
        assert bad not in html, bad
    assert "https://ok.example/" in html and "hello" in html


def test_a_twenty_post_digest_stays_under_gmails_clipping_size(store):
    store.add_subscriber("ada@example.org")
    long_body = "".join(f"<p>{'Paragraph of a long and detailed post about the journey. ' * 12}</p>" for _ in range(30))
    result = store.apply_check("link", CheckInput(posts=[
        item(n, title=f"A long title for post number {n} about rescues and resettlement", body=long_body)
        for n in range(1, 21)]), NOW)
    assert result.held                     # 20 new posts on a 1-post source: the operator releases them
    assert store.release_source("link") == 20
    compose_and_queue(store, SETTINGS, NOW)
    [queued] = store.due_outbox(NOW)
    assert len(queued.raw) < 102 * 1024, len(queued.raw)


def test_unsubscribe_over_real_http_and_forged_tokens_refused(store, tmp_path):
    from postwatch.config import Config
    from crawler.runtime import run
    from postwatch.web import WebEndpoint
    from postwatch.app import App

    config = Config(path=tmp_path / "postwatch.toml", database=str(tmp_path / "state.db"))
    app = App(config, store)
    settings = app.mailer.digest_settings()
    ada = store.add_subscriber("ada@example.org")
    bo = store.add_subscriber("bo@example.org")
    endpoint = WebEndpoint(app, "127.0.0.1", 0)
    run(endpoint.start)
    base = f"http://{endpoint.address}/unsubscribe"
    try:
        token = make_token(ada, settings.secret)
        with urllib.request.urlopen(f"{base}?token={urllib.parse.quote(token)}") as page:   # a mail scanner's GET
            assert page.status == 200 and b"<form" in page.read()
        assert store.get_subscriber(ada.id).status == "active"

        forged = f"{bo.id}.{token.split('.', 1)[1]}"
        for bad in (forged, token[:-2] + "xx", "1", ""):
            request = urllib.request.Request(base, data=urllib.parse.urlencode({"token": bad}).encode(), method="POST")
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request)
            assert refused.value.code == 403
        assert store.get_subscriber(bo.id).status == "active"

        one_click = urllib.request.Request(f"{base}?token={urllib.parse.quote(token)}", data=b"List-Unsubscribe=One-Click",
                                           method="POST", headers={"Content-Type": "application/x-www-form-urlencoded"})
        with urllib.request.urlopen(one_click) as done:
            assert done.status == 200
        assert store.get_subscriber(ada.id).status == "unsubscribed"
    finally:
        run(endpoint.stop)
    publish(store, item(1))
    queued = compose_and_queue(store, settings, NOW)
    assert [store.due_outbox(NOW)[0].to_addr] == ["bo@example.org"] and len(queued) == 1


def test_templates_can_be_overridden_from_a_folder(store, tmp_path):
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "digest.txt.j2").write_text("Custom digest for {{ email }}:\n{% for g in groups %}{% for p in g.posts %}"
                                          "* {{ p.title }}\n{% endfor %}{% endfor %}Leave: {{ unsubscribe_url }}\n")
    settings = DigestSettings(**{**SETTINGS.__dict__, "templates_dir": folder})
    subscriber = store.add_subscriber("ada@example.org")
    publish(store, item(1))
    message = build_message(subscriber, store.pending_events(subscriber), settings, NOW)
    parsed = message_from_bytes(message.raw, policy=policy.default)
    text = parsed.get_body(("plain",)).get_content()
    assert text.startswith("Custom digest for ada@example.org:\n* Rescue story 1\nLeave: https://watch.example.org/unsubscribe?token=")
    assert "Rescue story 1" in parsed.get_body(("html",)).get_content()     # the built-in HTML template still serves


@pytest.mark.parametrize("sender", [
    "Liberty in North Korea — Blog Watch (Seoul and Los Angeles offices) <digest@postwatch.test>",
    "Liberty in North Korea Blog Watch for the Seoul and Los Angeles offices and friends <digest@postwatch.test>",
    "리버티 인 노스코리아 <digest@postwatch.test>",
    '"Watch, LiNK" <digest@postwatch.test>',
])
def test_the_envelope_sender_is_the_from_address_however_the_display_name_is_folded_or_encoded(store, sender):
    """MAIL FROM must be the plain address: a strict relay refuses anything else."""
    store.add_subscriber("reader@example.org")
    publish(store, item(1))
    compose_and_queue(store, DigestSettings(**{**SETTINGS.__dict__, "from_addr": sender}), NOW)
    with MailCatcher() as smtp:
        stats = deliver(store, smtp.port)
        assert stats.sent == 1
        assert [mail_from for mail_from, _ in smtp.envelopes] == ["digest@postwatch.test"]


# -- sender identity: DKIM and the envelope ------------------------------------------------

@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory):
    from digest.signing import generate_key

    path = tmp_path_factory.mktemp("dkim") / "pw2026.pem"
    generate_key(path)
    return path


def published(record: str, name: bytes = b"pw2026._domainkey.postwatch.test."):
    """A DNS stub: the TXT record the operator published, for that name only."""
    def lookup(queried: bytes, timeout: float = 5):
        return record.encode() if queried.lower() == name else None
    return lookup


def test_every_digest_is_dkim_signed_over_the_unsubscribe_headers_and_verifies(store, dkim_key, tmp_path):
    import dkim
    from digest.signing import DkimSigner, generate_key

    signer = DkimSigner.from_file(dkim_key, "postwatch.test", "pw2026")
    for address in ("ada@example.org", "ada@bücher.example", "jörg@example.org"):
        store.add_subscriber(address)
    publish(store, item(1, title="Défense des réfugiés — 北朝鮮 " + "long title " * 12), item(2))
    compose_and_queue(store, SETTINGS, NOW)
    store.enqueue_message(build_alert("ops@example.org", "source link failing", ["3 checks failed"], SETTINGS, NOW), NOW)
    with MailCatcher(tmp_path / "received") as smtp:
        assert deliver(store, smtp.port, dkim=signer).sent == 4
        received = [path.read_bytes() for path in smtp.files]
    assert [b"alert." in raw.split(b"Message-ID:")[1][:30] for raw in received].count(True) == 1     # operator alerts too
    dns = published(signer.dns_record())
    for raw in received:
        assert dkim.verify(raw, dnsfunc=dns), raw[:600]
        fields = dkim.util.parse_tag_value(raw.split(b"DKIM-Signature:", 1)[1].split(b"\r\n\r\n")[0].split(b"\r\nContent-Type")[0])
        signed = {name.strip().lower() for name in fields[b"h"].split(b":")}
        assert {b"from", b"to", b"subject", b"date", b"message-id"} <= signed
        if b"List-Unsubscribe:" in raw:                 # a digest, not the alert
            assert {b"list-id", b"list-unsubscribe", b"list-unsubscribe-post"} <= signed
        assert fields[b"c"] == b"relaxed/relaxed" and fields[b"d"] == b"postwatch.test" and fields[b"s"] == b"pw2026"
    raw = next(raw for raw in received if b"List-Unsubscribe:" in raw)
    head, body = raw.split(b"\r\n\r\n", 1)
    index = body.index(b"Content-Type: text/html")
    index = body.index(b"\r\n\r\n", index) + 10
    flipped = body[:index] + (b"B" if body[index:index + 1] != b"B" else b"C") + body[index + 1:]
    assert not dkim.verify(head + b"\r\n\r\n" + flipped, dnsfunc=dns)                  # a tampered body
    other = head.replace(b"https://watch.example.org/unsubscribe?token=", b"https://evil.example/unsubscribe?token=")
    assert other != head and not dkim.verify(other + b"\r\n\r\n" + body, dnsfunc=dns)   # a rewritten List-Unsubscribe
    stranger = DkimSigner("postwatch.test", "pw2026", generate_key(tmp_path / "other.pem"))
    assert not dkim.verify(raw, dnsfunc=published(stranger.dns_record()))           # someone else's key


def test_relaxed_body_canonicalisation_shortcut_matches_dkimpy():
    from digest.signing import RELAXED, _relaxed_body

    for body in (b"", b"\r\n", b"abc\r\n\r\n\r\n", b"abc", b"a  b\r\n", b"a\tb \r\n", b"line \r\nnext\r\n\r\n",
                 b"QUJD\r\nREVG\r\n--boundary--\r\n", b"x ", b"Content-Type: text/plain; charset=\"utf-8\"\r\n\r\nQUJD\r\n"):
        assert _relaxed_body(body) == RELAXED.canonicalize_body(body), body


def test_mail_from_is_the_configured_envelope_sender_or_the_from_address(store, tmp_path):
    """The envelope comes from the config (parsed once), not from a header line; a message whose From
    holds no address is marked failed with the reason instead of going out as postwatch@localhost."""
    from postwatch.app import App
    from postwatch.config import Config

    config = Config(path=tmp_path / "postwatch.toml", database=str(tmp_path / "state.db"))
    config.digest.from_addr = "리버티 인 노스코리아 — Blog Watch (Seoul and Los Angeles offices) <digest@bücher.example>"
    config.smtp.security = "none"
    store.add_subscriber("reader@example.org")
    publish(store, item(1))
    app = App(config, store=store)
    compose_and_queue(store, app.mailer.digest_settings(), NOW)
    with MailCatcher() as smtp:
        config.smtp.host, config.smtp.port = "127.0.0.1", smtp.port
        with app.mailer.delivery_channel() as channel:
            assert flush_outbox(store, channel, NOW).sent == 1
        config.smtp.envelope_from = "bounces@postwatch.test"
        bo = store.add_subscriber("bo@example.org")
        publish(store, item(2))
        compose_and_queue(store, app.mailer.digest_settings(), NOW, subscriber_ids=[bo.id])
        with app.mailer.delivery_channel() as channel:
            assert flush_outbox(store, channel, NOW).sent == 1
        assert [mail_from for mail_from, _ in smtp.envelopes] == ["digest@xn--bcher-kva.example", "bounces@postwatch.test"]
        assert "리버티 인 노스코리아" in str(smtp.messages[0]["From"])

        no_sender = DigestSettings(**{**SETTINGS.__dict__, "from_addr": "Undisclosed sender"})
        cy = store.add_subscriber("cy@example.org")
        publish(store, item(3))
        compose_and_queue(store, no_sender, NOW, subscriber_ids=[cy.id])
        stats = deliver(store, smtp.port)
        assert (stats.sent, stats.failed) == (0, 1) and len(smtp.envelopes) == 2
    assert "no plain sender address for MAIL FROM" in store.outbox_errors(limit=1)[0][1]


# -- SpamAssassin (Debian's package and rules, local tests only) --------------------------

def _demo_like_events():
    from digests import event

    diff = {"title": None, "truncated": False, "paragraphs": [
        {"op": "changed", "words": [["delete", "At"], ["insert", "Now at"], ["equal", " the forefront of North Korean human rights work."]]},
        {"op": "added", "text": "An update on the year's rescues and what comes next."}]}
    return [event(1), event(2), event(3, kind="updated", diff=diff)]


@pytest.mark.parametrize("which", ["demo", "hundred", "hostile", "demo-ko", "large-ko"])
def test_spamassassin_scores_each_digest_as_wanted_mail(which, dkim_key):
    import shutil
    import subprocess

    from digests import NOW as AT, Reader, SETTINGS as FULL, event, hostile_events
    from digest.signing import DkimSigner

    if shutil.which("spamassassin") is None:
        pytest.fail("Debian's spamassassin is needed for this test (.ci/run installs it: apt-get install spamassassin)")
    large = lambda: ([event(n) for n in range(1, 166)] + [event(1000 + n, kind="updated", diff=_demo_like_events()[2].diff)  # noqa: E731
                                                          for n in range(5)] + [event(2000, kind="removed")])
    events = {"demo": _demo_like_events, "hundred": lambda: [event(n) for n in range(1, 101)], "hostile": hostile_events,
              "demo-ko": _demo_like_events, "large-ko": large}[which]()
    import dataclasses

    reader = dataclasses.replace(Reader(), lang="ko" if which.endswith("-ko") else "en")
    signer = DkimSigner.from_file(dkim_key, "postwatch.test", "pw2026")
    settings = DigestSettings(**{**FULL.__dict__, "from_addr": "Liberty in North Korea blog watch <digest@postwatch.test>"})
    raw = signer.sign(build_message(reader, events, settings, AT).raw)
    result = subprocess.run(["spamassassin", "-L", "-t"], input=raw, capture_output=True, timeout=120, check=True)
    report = result.stdout.decode("utf-8", "replace")
    score = float(re.search(r"X-Spam-Status: \w+, score=(-?[\d.]+)", report).group(1))
    rules = report.split("Content analysis details:", 1)[1]
    print(f"{which}: SpamAssassin score {score}{rules}")
    assert score <= -1.0, rules


# -- A Korean reader (issue 33): the digest in Korean, through the real CLI --------------------

def _english_strings() -> set[str]:
    """Every English string of the digest's templates and code, as the catalogue lists them."""
    from babel.messages.pofile import read_po

    from digest.i18n import LOCALE_DIR

    with (LOCALE_DIR / "ko" / "LC_MESSAGES" / "messages.po").open("rb") as source:
        catalog = read_po(source, locale="ko")
    found = set()
    for message in catalog:
        for text in (message.id if isinstance(message.id, tuple) else (message.id,)):
            # The words between the placeholders and the markup: "subscribed to", "Unsubscribe".
            for piece in re.split(r"%\(\w+\)[sd]|<[^>]+>", text or ""):
                if len(piece.strip(" .,:…“”")) >= 3:
                    found.add(piece.strip(" .,:…“”"))
    return found


def test_a_korean_subscribers_digest_through_the_cli_is_in_korean(cli, site, smtp, tmp_path):
    import urllib.request
    from email import message_from_bytes, policy

    cli("check", check=True)
    cli("subscribers", "add", "kim@example.org", "--lang", "ko", "--tz", "Asia/Seoul", check=True)
    cli("subscribers", "add", "ada@example.org", check=True)
    posts = [site.add_post(f"Korean reader post {n}", body_paragraphs=["Outside information changes lives. " * 12])
             for n in range(5)]                       # more than 30 % of the listing at once is held
    cli("check", check=True)
    cli("digest", check=True)
    messages = {str(m["To"]): m for m in smtp.messages}
    assert set(messages) == {"kim@example.org", "ada@example.org"}, (list(messages), cli("status").stdout)
    korean, english = messages["kim@example.org"], messages["ada@example.org"]
    assert korean["Subject"].startswith("새 글 5개 — ") and english["Subject"].startswith("5 new — ")
    html = korean.get_body(("html",)).get_content()
    text = korean.get_body(("plain",)).get_content()
    assert '<html lang="ko">' in html and '<html lang="en">' in english.get_body(("html",)).get_content()
    footer = html.rsplit('class="footer"', 1)[1]
    # Added on the command line: "was added to the list", in Korean.
    assert "<p>kim@example.org 주소가 postwatch 수신자 목록에 추가되어 이 소식을 매일 보내 드립니다.\n한 번의 클릭으로 " in footer
    assert "수신 거부</a>하거나" in footer and "수신 거부: http" in text
    assert "kim@example.org 주소가 postwatch 수신자 목록에 추가되어" in " ".join(text.split())
    assert re.search(r"\d{4}년 \d{1,2}월 \d{1,2}일", text)                       # Babel's Korean date
    # No English left of the template strings (the posts themselves stay as written).
    shown = re.sub(r"<style.*?</style>|<[^>]+>", " ", html, flags=re.S) + text
    for post in posts:
        shown = shown.replace(post.title, "").replace("Outside information changes lives.", "")
    leftovers = [s for s in _english_strings() if re.search(rf"(?<![\w-]){re.escape(s)}(?![\w-])", shown)]
    assert leftovers == [], leftovers
    # The footer's unsubscribe link is the one List-Unsubscribe gives, signed for this subscriber.
    from urllib.parse import unquote

    from digest.tokens import verify_token
    from support.harness import ENVIRONMENT
    from state import Store

    link = re.search(r'<a href="([^"]+)"[^>]*>수신 거부</a>', footer).group(1).replace("&amp;", "&")
    assert f"<{link}>" in korean["List-Unsubscribe"]
    store = Store(str(tmp_path / "state.db"))
    try:
        kim = store.get_subscriber("kim@example.org")
        assert kim.lang == "ko"
        assert verify_token(unquote(link.split("token=", 1)[1]), ENVIRONMENT["POSTWATCH_SECRET"].encode(), store.get_subscriber) == kim.id
    finally:
        store.close()
