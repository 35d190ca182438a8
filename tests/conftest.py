"""Fixtures shared by the end-to-end tests: the LiNK replica, a real SMTP server, a config file
and a way to drive the real `postwatch` CLI."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def site():
    from postwatch.replica import BlogReplica

    with BlogReplica() as replica:
        yield replica


@pytest.fixture
def smtp(tmp_path):
    from postwatch.mailcatcher import MailCatcher

    with MailCatcher(tmp_path / "received") as catcher:
        yield catcher


def write_config(folder: Path, blog_url: str, smtp_port: int | None, *, listen_port: int | None = None,
                 extra: str = "") -> Path:
    smtp_block = f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\nsecurity = "none"\n' if smtp_port else ""
    text = f'''database = "state.db"

[crawl]
download_delay = 0
autothrottle = false
timeout = 5
retries = 1
removal_confirm_after = "0s"

[[sources]]
name = "link"
url = "{blog_url}"
kind = "link"
title = "Liberty in North Korea"

[digest]
from = "postwatch <digest@postwatch.test>"

{smtp_block}
[daemon]
listen = "127.0.0.1:{listen_port or free_port()}"
{extra}
'''
    path = folder / "postwatch.toml"
    path.write_text(text, encoding="utf-8")
    return path


class Cli:
    def __init__(self, config: Path):
        self.config = config

    def __call__(self, *args: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
        env = {**os.environ, "POSTWATCH_SECRET": "test-secret"}
        result = subprocess.run([sys.executable, "-m", "postwatch", "--config", str(self.config), *args],
                                capture_output=True, text=True, timeout=timeout, env=env, cwd=self.config.parent)
        if check and result.returncode != 0:
            raise AssertionError(f"postwatch {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    def popen(self, *args: str) -> subprocess.Popen:
        env = {**os.environ, "POSTWATCH_SECRET": "test-secret"}
        return subprocess.Popen([sys.executable, "-m", "postwatch", "--config", str(self.config), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=self.config.parent)


@pytest.fixture
def cli(tmp_path, site, smtp) -> Cli:
    return Cli(write_config(tmp_path, site.blog_url, smtp.port))
