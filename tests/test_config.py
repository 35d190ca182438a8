"""The one config file: defaults with no file, and `postwatch config check` on bad input."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
