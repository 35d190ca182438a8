"""A new delivery channel is one class registered in one place: defined here, named in the
config file, and `postwatch digest` delivers through it with nothing else changed.

The commands run in this process (postwatch.cli.main), where the class below is registered; a
subprocess would not know it."""
from __future__ import annotations

import logging
import os
from email import message_from_bytes, policy

import pytest

from digest.delivery import Channel, DeliveryResult, register
from support.harness import write_config

NOTEBOOK: list[tuple[str, str, bytes]] = []       # (label, recipient, raw message) as the channel got them


@register("notebook")
class NotebookChannel(Channel):
    """Notes each message down instead of sending it: a channel postwatch does not ship."""

    def __init__(self, label: str):
        self.label = label

    def send(self, item) -> DeliveryResult:
        NOTEBOOK.append((self.label, item.to_addr, item.raw))
        return DeliveryResult("sent", f"noted in {self.label}")


@pytest.fixture
def postwatch(monkeypatch, capsys):
    """`postwatch ARGS...` in this process: (exit status, stdout, stderr). The umask and the
    logging setup that main() changes are put back afterwards."""
    from postwatch.cli import main

    monkeypatch.setenv("POSTWATCH_SECRET", "test-secret")
    umask = os.umask(0o077)
    os.umask(umask)
    root = logging.getLogger()
    handlers, levels = root.handlers[:], {name: logging.getLogger(name).level for name in
                                          ("", "postwatch", "scrapy", "twisted", "apscheduler", "filelock", "py.warnings")}

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        status = main(list(args))
        out, err = capsys.readouterr()
        return status, out, err

    yield run
    root.handlers[:] = handlers
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    os.umask(umask)


def test_a_channel_named_in_the_config_delivers_the_digest(tmp_path, site, postwatch):
    NOTEBOOK.clear()
    config = str(write_config(tmp_path, site.blog_url, None,
                              extra='[delivery]\nchannel = "notebook"\noptions = { label = "desk" }\n'))
    status, out, _ = postwatch("--config", config, "config", "check")
    assert status == 0 and "channel 'notebook'" in out

    assert postwatch("--config", config, "check")[0] == 0
    assert postwatch("--config", config, "subscribers", "add", "ada@example.org", "--cadence", "immediate")[0] == 0
    post = site.add_post("Noted, not mailed", body_paragraphs=["Delivered through a channel defined in a test."])
    assert postwatch("--config", config, "check")[0] == 0
    status, out, err = postwatch("--config", config, "digest")

    assert status == 0, err
    assert "1 composed, 1 delivered via channel 'notebook'" in out
    [(label, recipient, raw)] = NOTEBOOK
    assert (label, recipient) == ("desk", "ada@example.org")
    message = message_from_bytes(raw, policy=policy.default)
    assert post.title in message.get_body(preferencelist=("plain",)).get_content()
    assert not (tmp_path / "outbox").exists()               # the folder channel was not used
    assert "outbox: 0 pending, 1 sent, 0 failed" in postwatch("--config", config, "status")[1]


def test_options_the_channel_does_not_take_are_one_config_line(tmp_path, postwatch):
    config = tmp_path / "postwatch.toml"
    config.write_text('[delivery]\nchannel = "notebook"\noptions = { colour = "red" }\n', encoding="utf-8")
    status, out, err = postwatch("--config", str(config), "config", "check")
    assert status == 2 and out == ""
    [line] = err.strip().splitlines()
    assert line.startswith(f"postwatch: {config}: [delivery] options do not fit channel 'notebook': ")
    assert "colour" in line or "label" in line


def test_a_channel_that_claims_urls_is_not_a_mail_channel(tmp_path, postwatch):
    config = tmp_path / "postwatch.toml"
    config.write_text('[delivery]\nchannel = "webhook"\n', encoding="utf-8")
    status, out, err = postwatch("--config", str(config), "config", "check")
    assert status == 2 and out == ""
    assert err.strip() == (f"postwatch: {config}: [delivery] channel 'webhook' does not deliver email digests; it is "
                           "used by itself for subscribers and routes whose address it claims (a URL), so leave "
                           "[delivery] channel for the mail channel")
