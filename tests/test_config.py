"""The one config file: defaults with no file, and `postwatch config check` on bad input."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from postwatch.config import LINK_BLOG_URL, load_config, parse_duration

ROOT = Path(__file__).resolve().parent.parent
# What a real relay needs besides its host: a From domain it accepts and a public https unsubscribe link.
RELAY = ('[digest]\nfrom = "LiNK watch <digest@watch.example.org>"\n'
         '[unsubscribe]\npublic_url = "https://watch.example.org/unsubscribe"\n'
         '[smtp]\nhost = "smtp.example.org"\n')


def run_cli(*args, cwd, env=None):
    environment = {k: v for k, v in os.environ.items() if k not in ("POSTWATCH_CONFIG", "POSTWATCH_SMTP_PASSWORD")}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "postwatch", *args], capture_output=True, text=True,
                          cwd=cwd, env=environment, timeout=60)


def test_no_config_file_means_the_link_blog_sqlite_and_an_outbox_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("POSTWATCH_CONFIG", raising=False)
    config = load_config()
    assert [s.url for s in config.sources] == [LINK_BLOG_URL]
    assert config.database_url == f"sqlite:///{tmp_path / 'postwatch.db'}"
    assert config.smtp.host is None and config.outbox_path == tmp_path / "outbox"


def test_config_check_lists_every_problem_on_its_own_line(tmp_path):
    (tmp_path / "bad.toml").write_text('''
databse = "x.db"
[crawl]
interval = "soon"
[[sources]]
name = "dailynk"
url = "ftp://dailynk.com/feed"
[[sources]]
name = "ok"
url = "https://example.org/blog"
kind = "wordpress"
[smtp]
host = "smtp.example.org"
username = "postwatch"
connections = 0
[digest]
from = "Pöst <pöst@example.org>"
[daemon]
housekeeping = "61 * * *"
''', encoding="utf-8")
    result = run_cli("--config", "bad.toml", "config", "check", cwd=tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 8, result.stderr
    joined = "\n".join(lines)
    assert "unknown key 'databse'" in joined
    assert "interval" in joined and "soon" in joined
    assert "ftp://dailynk.com/feed" in joined and "dailynk" in joined
    assert "kind 'wordpress'" in joined
    assert "$POSTWATCH_SMTP_PASSWORD" in joined
    assert "housekeeping" in joined
    assert "connections must be between 1 and 32" in joined
    assert "[digest] from 'Pöst <pöst@example.org>'" in joined
    assert all(line.startswith("postwatch: ") for line in lines)


def test_config_check_accepts_the_shipped_example(tmp_path):
    example = run_cli("config", "example", cwd=tmp_path).stdout
    (tmp_path / "postwatch.toml").write_text(example, encoding="utf-8")
    result = run_cli("config", "check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout and "1 sources" in result.stdout


def test_smtp_password_comes_from_the_environment(tmp_path):
    (tmp_path / "postwatch.toml").write_text(RELAY + 'username = "me"\n', encoding="utf-8")
    assert run_cli("config", "check", cwd=tmp_path).returncode != 0
    ok = run_cli("config", "check", cwd=tmp_path, env={"POSTWATCH_SMTP_PASSWORD": "s3cret"})
    assert ok.returncode == 0, ok.stderr
    assert "s3cret" not in ok.stdout + ok.stderr


def test_durations():
    assert parse_duration("90s").total_seconds() == 90
    assert parse_duration("1h").total_seconds() == 3600
    assert parse_duration(45).total_seconds() == 45


def test_the_deploy_config_is_valid(tmp_path):
    result = run_cli("--config", str(ROOT / "deploy" / "postwatch.toml"), "config", "check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr


# -- what a real relay needs: `config check` says what would fail, one line each ------------

def _lines(result) -> list[str]:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stderr.strip().splitlines()


def test_the_default_outbox_setup_needs_nothing_more(tmp_path):
    (tmp_path / "postwatch.toml").write_text('[daemon]\nlisten = "0.0.0.0:8780"\n', encoding="utf-8")
    result = run_cli("config", "check", cwd=tmp_path)
    assert result.returncode == 0 and "outbox folder" in result.stdout, result.stderr


def test_with_a_relay_the_listen_address_and_a_localhost_sender_are_refused(tmp_path):
    (tmp_path / "postwatch.toml").write_text('[smtp]\nhost = "smtp.example.org"\n[daemon]\nlisten = "0.0.0.0:8780"\n',
                                             encoding="utf-8")
    lines = _lines(run_cli("config", "check", cwd=tmp_path))
    assert len(lines) == 2, lines
    assert "[unsubscribe] public_url is not set" in lines[0] and "http://0.0.0.0:8780/unsubscribe" in lines[0]
    assert "[digest] from" in lines[1] and "localhost" in lines[1]


@pytest.mark.parametrize("url, why", [
    ("http://watch.example.org/unsubscribe", "must be https"),
    ("https://0.0.0.0:8780/unsubscribe", "unspecified address"),
    ("https://127.0.0.1:8780/unsubscribe", "loopback"),
    ("https://[::1]/unsubscribe", "loopback"),
    ("https://192.168.1.20/unsubscribe", "private address"),
    ("https://localhost/unsubscribe", "not a public host name"),
])
def test_an_unsubscribe_url_readers_cannot_open_is_refused(tmp_path, url, why):
    (tmp_path / "postwatch.toml").write_text(RELAY.replace("https://watch.example.org/unsubscribe", url), encoding="utf-8")
    lines = _lines(run_cli("config", "check", cwd=tmp_path))
    assert len(lines) == 1 and why in lines[0] and url in lines[0], lines


@pytest.mark.parametrize("sender, why", [
    ("Watch <digest@localhost>", "localhost"),
    ("Watch <digest@intranet>", "intranet"),
    ("Watch <digest@watch.example.test>", "watch.example.test"),
])
def test_a_from_domain_a_relay_refuses_is_refused(tmp_path, sender, why):
    (tmp_path / "postwatch.toml").write_text(RELAY.replace("LiNK watch <digest@watch.example.org>", sender), encoding="utf-8")
    lines = _lines(run_cli("config", "check", cwd=tmp_path))
    assert len(lines) == 1 and "[digest] from" in lines[0] and why in lines[0], lines


def test_the_envelope_sender_must_be_a_plain_address(tmp_path):
    (tmp_path / "postwatch.toml").write_text(RELAY + 'envelope_from = "Bounces <bounces@watch.example.org>"\n', encoding="utf-8")
    result = run_cli("config", "check", cwd=tmp_path)
    assert result.returncode == 2 and "[smtp] envelope_from" in result.stderr and "plain address" in result.stderr
    long_name = RELAY.replace("LiNK watch <digest@watch.example.org>",
                              "리버티 인 노스코리아 — Blog Watch (Seoul and Los Angeles offices) <digest@watch.example.org>")
    (tmp_path / "postwatch.toml").write_text(long_name, encoding="utf-8")
    ok = run_cli("config", "check", cwd=tmp_path)
    assert ok.returncode == 0 and "MAIL FROM digest@watch.example.org" in ok.stdout, ok.stderr


def test_dkim_keygen_then_config_check_signs_and_verifies_offline(tmp_path):
    made = run_cli("dkim", "keygen", "--selector", "pw2026", "--domain", "watch.example.org", "--key", "dkim.pem", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    key = tmp_path / "dkim.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    assert 'pw2026._domainkey.watch.example.org. IN TXT ( "v=DKIM1; k=rsa; p=MIIB' in made.stdout
    assert run_cli("dkim", "keygen", "--selector", "pw2026", "--key", "dkim.pem", cwd=tmp_path).returncode != 0   # never overwritten
    (tmp_path / "postwatch.toml").write_text(RELAY + '[dkim]\nselector = "pw2026"\nkey_file = "dkim.pem"\n', encoding="utf-8")
    ok = run_cli("config", "check", cwd=tmp_path)
    assert ok.returncode == 0 and "DKIM pw2026._domainkey.watch.example.org" in ok.stdout, ok.stderr
    record = run_cli("dkim", "record", cwd=tmp_path)
    assert record.returncode == 0 and record.stdout.split("p=", 1)[1][:40] == made.stdout.split("p=", 1)[1][:40]

    (tmp_path / "postwatch.toml").write_text(RELAY + '[dkim]\nselector = "pw2026"\ndomain = "other.example.org"\n'
                                             'key_file = "dkim.pem"\n', encoding="utf-8")
    key.chmod(0o644)
    lines = _lines(run_cli("config", "check", cwd=tmp_path))
    assert len(lines) == 2 and "readable by others" in lines[0] and "DMARC" in lines[1], lines

    key.write_text("not a key\n")
    key.chmod(0o600)
    lines = _lines(run_cli("config", "check", cwd=tmp_path))
    assert len(lines) == 1 and "dkim.pem" in lines[0] and "PEM private key" in lines[0], lines


def test_an_incomplete_dkim_section_is_refused_on_load(tmp_path):
    (tmp_path / "postwatch.toml").write_text('[dkim]\nselector = "pw 2026"\n', encoding="utf-8")
    result = run_cli("config", "check", cwd=tmp_path)
    assert result.returncode == 2 and "both selector and key_file" in result.stderr and "DNS labels" in result.stderr


@pytest.mark.parametrize("setting, flag, json_lines", [
    ('log_format = "json"\n', (), True),
    ("", (), False),                                            # text by default
    ('log_format = "json"\n', ("--log-format", "text"), False),  # the command line wins
    ('log_format = "text"\n', ("--log-format", "json"), True),
])
def test_daemon_log_format_from_the_config_and_the_command_line(tmp_path, setting, flag, json_lines):
    import json
    import socket

    from support.harness import write_config

    with socket.socket() as sock:         # a port nobody listens on: the check fails and logs why
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/blog"
    config = write_config(tmp_path, dead, None, extra=setting)
    result = run_cli("--config", str(config), *flag, "run", "--once", cwd=tmp_path, env={"POSTWATCH_SECRET": "s"})
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and lines, result.stderr
    if json_lines:
        records = [json.loads(line) for line in lines]
        assert all({"time", "level", "message"} <= set(record) for record in records)
        assert any(record["level"] == "error" and record.get("source") == "link" for record in records)
    else:
        assert not any(line.startswith("{") for line in lines)
        assert any(" ERROR " in line for line in lines), lines
