"""What an attacker or an accident could do with postwatch's own files and links: private
file modes, templates in Jinja2's sandbox, unsubscribe links bound to one subscription, and
`history --limit` kept to a sane range. Driven through the real CLI, and through the handler
the daemon serves /unsubscribe with."""
from __future__ import annotations

import base64
import hashlib
import hmac
import stat
from datetime import datetime, timezone
import urllib.parse
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from support.harness import ENVIRONMENT, Cli, write_config

SECRET = ENVIRONMENT["POSTWATCH_SECRET"].encode()     # what the harness's Cli puts in the environment


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def one_line(result, status: int = 2) -> str:
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def folder_cli(tmp_path, site) -> Cli:
    """The replica as the source and no SMTP server: digests are written as .eml files."""
    return Cli(write_config(tmp_path, site.blog_url, None))


def digest_with_one_new_post(cli: Cli, site, title: str) -> list[Path]:
    before = set((cli.config.parent / "outbox").glob("*.eml"))
    site.add_post(title, body_paragraphs=[f"About {title}."])
    cli("check", check=True)
    cli("digest", check=True)
    return sorted(set((cli.config.parent / "outbox").glob("*.eml")) - before)


def unsubscribe_token(eml: Path) -> str:
    message = message_from_bytes(eml.read_bytes(), policy=policy.default)
    https = message["List-Unsubscribe"].split(",")[0].strip(" <>")
    return urllib.parse.unquote(https.split("token=")[1])


# -- files postwatch writes ---------------------------------------------------------------

def test_database_digests_and_preview_are_private_to_the_account(folder_cli, site, tmp_path):
    folder_cli("subscribers", "add", "ada@example.org", check=True)
    folder_cli("check", check=True)
    [eml] = digest_with_one_new_post(folder_cli, site, "A new rescue")
    folder_cli("digest", "preview", "previews/digest.html", check=True)

    assert mode(tmp_path / "state.db") == 0o600
    for extra in ("state.db-wal", "state.db-shm"):
        if (tmp_path / extra).exists():
            assert mode(tmp_path / extra) == 0o600, extra
    assert mode(tmp_path / "outbox") == 0o700
    assert mode(eml) == 0o600
    assert mode(tmp_path / "previews") == 0o700
    assert mode(tmp_path / "previews" / "digest.html") == 0o600


# -- templates ----------------------------------------------------------------------------

def test_a_template_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "digest.html.j2").write_text(
        "<p>{{ cycler.__init__.__globals__.os.system('touch " + str(marker) + "') }}</p>", encoding="utf-8")
    config = tmp_path / "postwatch.toml"
    config.write_text('database = "state.db"\n[digest]\ntemplates_dir = "templates"\n', encoding="utf-8")
    cli = Cli(config)
    cli("subscribers", "add", "ada@example.org", check=True)

    line = one_line(cli("digest", "preview", "out.html"))
    assert "digest.html.j2" in line and "unsafe" in line
    assert not marker.exists()
    assert not (tmp_path / "out.html").exists()


def test_a_sandboxed_template_still_renders_and_escapes(tmp_path):
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "digest.html.j2").write_text(
        "<h1>{{ site_name | upper }}</h1><p>{{ email }}</p>{% for g in groups %}{{ g.title }}{% endfor %}", encoding="utf-8")
    config = tmp_path / "postwatch.toml"
    config.write_text('database = "state.db"\n[digest]\ntemplates_dir = "templates"\nsite_name = "<b>watch</b>"\n',
                      encoding="utf-8")
    cli = Cli(config)
    cli("subscribers", "add", "ada@example.org", check=True)
    cli("digest", "preview", "out.html", check=True)
    html = (tmp_path / "out.html").read_text(encoding="utf-8")
    assert "&lt;B&gt;WATCH&lt;/B&gt;" in html and "ada@example.org" in html


# -- unsubscribe links --------------------------------------------------------------------

def _handle(method: str, token: str, database: Path, email: str = "ada@example.org") -> tuple[int, str]:
    """What the daemon's /unsubscribe answers, and the subscriber's status afterwards."""
    from digest.settings import DigestSettings
    from digest.unsubscribe import handle
    from state import Store

    store = Store(str(database))
    try:
        status, _, _ = handle(method, token, store, DigestSettings(secret=SECRET))
        return status, store.get_subscriber(email).status
    finally:
        store.close()


def test_a_link_from_before_an_unsubscribe_does_not_end_a_later_subscription(folder_cli, site, tmp_path):
    folder_cli("subscribers", "add", "ada@example.org", check=True)
    folder_cli("check", check=True)
    [first] = digest_with_one_new_post(folder_cli, site, "First news")
    old_token = unsubscribe_token(first)

    assert _handle("POST", old_token, tmp_path / "state.db") == (200, "unsubscribed")
    folder_cli("subscribers", "add", "ada@example.org", "--resubscribe", check=True)   # she comes back

    assert _handle("POST", old_token, tmp_path / "state.db") == (403, "active")
    assert _handle("GET", old_token, tmp_path / "state.db") == (403, "active")

    [second] = digest_with_one_new_post(folder_cli, site, "Second news")
    new_token = unsubscribe_token(second)
    assert new_token != old_token
    assert _handle("POST", new_token, tmp_path / "state.db") == (200, "unsubscribed")


def _token_signed_before_0004(subscriber_id: int, email: str) -> str:
    """The token format of revision 0002, as it sits in mailboxes today."""
    mac = hmac.new(SECRET, f"unsubscribe:{subscriber_id}:{email.lower()}".encode(), hashlib.sha256).digest()[:18]
    return f"{subscriber_id}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def test_links_mailed_before_the_migration_keep_working_until_a_resubscription(tmp_path):
    from sqlalchemy import insert

    from state import Store
    from state.schema import subscribers

    database = tmp_path / "state.db"
    old = Store(str(database), migrate=False)
    old.migrate("0002")
    with old.engine.begin() as conn:
        for email in ("ada@example.org", "bo@example.org"):
            conn.execute(insert(subscribers).values(email=email, cadence="daily", send_time="08:00", timezone="UTC",
                                                    status="active", cursor=0, created_at=datetime(2026, 1, 1, tzinfo=timezone.utc)))
    old.close()
    store = Store(str(database))                    # migrates to the newest revision
    ada, bo = store.get_subscriber("ada@example.org"), store.get_subscriber("bo@example.org")
    store.close()
    ada_token, bo_token = _token_signed_before_0004(ada.id, ada.email), _token_signed_before_0004(bo.id, bo.email)

    # Bo unsubscribes and subscribes again after the upgrade: his old link dies with that subscription.
    assert _handle("POST", bo_token, database, "bo@example.org") == (200, "unsubscribed")
    config = tmp_path / "postwatch.toml"
    config.write_text('database = "state.db"\n', encoding="utf-8")
    Cli(config)("subscribers", "add", "bo@example.org", "--resubscribe", check=True)
    assert _handle("POST", bo_token, database, "bo@example.org") == (403, "active")

    # Ada never left: the link in her mailbox still works.
    assert _handle("POST", ada_token, database) == (200, "unsubscribed")


def test_a_token_with_an_absurd_id_is_refused_not_a_crash(tmp_path):
    from state import Store

    Store(str(tmp_path / "state.db")).close()
    config = tmp_path / "postwatch.toml"
    config.write_text('database = "state.db"\n', encoding="utf-8")
    Cli(config)("subscribers", "add", "ada@example.org", check=True)
    assert _handle("POST", "99999999999999999999999.AAAA", tmp_path / "state.db") == (403, "active")


# -- history --limit ----------------------------------------------------------------------

@pytest.mark.parametrize("limit", ["99999999999999999999", "0", "-3", "10001", "ten"])
def test_history_limit_out_of_range_is_one_line(tmp_path, limit):
    config = tmp_path / "postwatch.toml"
    config.write_text('database = "state.db"\n', encoding="utf-8")
    line = one_line(Cli(config)("history", "--limit", limit))
    assert "--limit" in line and "1 to 10,000" in line


def test_history_limit_in_range_works(tmp_path):
    config = tmp_path / "postwatch.toml"
    config.write_text('database = "state.db"\n', encoding="utf-8")
    from state import Store

    Store(str(tmp_path / "state.db")).close()
    result = Cli(config)("history", "--limit", "10000")
    assert result.returncode == 0 and "no events yet" in result.stdout
