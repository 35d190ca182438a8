"""End to end through the real CLI: the LiNK replica over HTTP, a real SMTP server on loopback."""
from __future__ import annotations

import json
import signal
import sqlite3
import time
import urllib.request

from support.harness import Cli, free_port, write_config


def _body(message) -> str:
    parts = [message.get_body(preferencelist=("plain",)), message.get_body(preferencelist=("html",))]
    return "\n".join(p.get_content() for p in parts if p is not None)


def test_first_check_is_a_baseline_then_three_new_posts_reach_each_subscriber_once(cli, site, smtp):
    cli("subscribers", "add", "ada@example.org", check=True)
    cli("subscribers", "add", "kim@example.org", "--cadence", "weekly", "--day", "fri", check=True)

    first = cli("check", check=True)
    assert "baseline" in first.stdout
    cli("digest", check=True)
    assert smtp.messages == []

    added = [site.add_post(f"Rescue update number {n}", body_paragraphs=[f"Paragraph about rescue {n}."]) for n in (1, 2, 3)]
    second = cli("check", check=True)
    assert "link: 3 new" in second.stdout
    cli("digest", check=True)

    assert sorted(to for _, tos in smtp.envelopes for to in tos) == ["ada@example.org", "kim@example.org"]
    for message in smtp.messages:
        text = _body(message)
        for post in added:
            assert post.title in text
            assert f"{site.blog_url}/{post.slug}" in text
        others = [p.title for p in site.posts if p not in added]
        assert not any(title in text for title in others)

    third = cli("check", check=True)
    assert "no changes" in third.stdout
    cli("digest")
    assert len(smtp.messages) == 2


def test_edited_body_is_updated_but_related_lists_and_form_changes_are_not(cli, site, smtp):
    cli("check", check=True)
    cli("check", "--full", check=True)           # reads every post once, so later edits can be diffed
    cli("subscribers", "add", "ada@example.org", check=True)

    site.change_chrome()                        # related-post lists, newsletter form, nav
    quiet = cli("check", "--full", check=True)
    assert "no changes" in quiet.stdout
    cli("digest")
    assert smtp.messages == []

    post = site.posts[3]
    site.edit_post(post.slug, body_paragraphs=["A completely new opening paragraph about the rescue.", "And more."])
    site.clear_log()
    changed = cli("check", "--full", check=True)
    assert "1 updated" in changed.stdout and "seen once" not in changed.stdout
    # Mailed only because a second fetch, within the same check, saw the same content.
    assert [r.status for r in site.requests if r.path.rstrip("/") == f"/blog/{post.slug}"] == [200, 200]
    cli("digest", check=True)
    [message] = smtp.messages
    text = _body(message)
    assert post.title in text
    assert "updated" in text.lower()
    assert "completely new opening paragraph" in text


def test_a_post_under_several_url_variants_is_stored_once(cli, site):
    cli("check", check=True)
    status = cli("status", check=True).stdout
    assert f"posts {len(site.posts)}," in status
    history = cli("history", check=True)
    assert "no events yet" in history.stdout


def test_unreachable_site_is_one_error_line_naming_the_source_and_sends_nothing(tmp_path, smtp):
    dead = f"http://127.0.0.1:{free_port()}/blog"
    cli = Cli(write_config(tmp_path, dead, smtp.port))
    cli("subscribers", "add", "ada@example.org", check=True)
    result = cli("check")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    assert "link" in errors[0] and "127.0.0.1" in errors[0]
    cli("digest")
    assert smtp.messages == []
    status = cli("status", check=True).stdout
    assert "last error" in status


def test_run_exits_zero_on_sigterm_with_state_intact(tmp_path, site, smtp):
    port = free_port()
    cli = Cli(write_config(tmp_path, site.blog_url, smtp.port, listen_port=port))
    cli("check", check=True)
    process = cli.popen("run")
    try:
        deadline = time.monotonic() + 30
        health = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    health = json.loads(response.read())
                    break
            except OSError:
                time.sleep(0.2)
        assert health and health["status"] == "ok", process.stderr.read() if process.poll() is not None else health
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert time.monotonic() - started < 10
    finally:
        if process.poll() is None:
            process.kill()
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert f"posts {len(site.posts)}," in cli("status", check=True).stdout


def test_json_log_lines_name_their_source(tmp_path, smtp):
    dead = f"http://127.0.0.1:{free_port()}/blog"
    cli = Cli(write_config(tmp_path, dead, smtp.port))
    result = cli("--log-format", "json", "run", "--once")
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line["level"] == "error"]
    assert errors and all(line["source"] == "link" for line in errors)
    assert all({"time", "level", "message"} <= set(line) for line in lines)


def test_digest_preview_writes_the_subscribers_html_and_sends_nothing(cli, site, smtp, tmp_path):
    cli("check", check=True)
    cli("subscribers", "add", "ada@example.org", check=True)
    post = site.add_post("Preview me please", body_paragraphs=["Shown in the preview."])
    cli("check", check=True)
    out = tmp_path / "preview.html"
    shown = cli("digest", "preview", "--subscriber", "ada@example.org", str(out), check=True)
    assert str(out) in shown.stdout
    html = out.read_text(encoding="utf-8")
    assert post.title in html and "Shown in the preview." in html and "ada@example.org" in html
    assert smtp.messages == []
    cli("digest", "--subscriber", "ada@example.org", "preview", str(tmp_path / "again.html"), check=True)
    assert post.title in (tmp_path / "again.html").read_text(encoding="utf-8")
    assert smtp.messages == []
    cli("digest", check=True)
    assert len(smtp.messages) == 1


def test_the_old_preview_option_is_one_line_naming_the_preview_command_and_sends_nothing(cli, site, smtp, tmp_path):
    cli("check", check=True)
    cli("subscribers", "add", "ada@example.org", "--cadence", "immediate", check=True)
    site.add_post("Not to be sent by a mistyped preview", body_paragraphs=["Body."])
    cli("check", check=True)
    result = cli("digest", "--preview", str(tmp_path / "old.html"))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "postwatch digest: --preview is gone; use: postwatch digest preview FILE [--subscriber ADDRESS] "
        "(see postwatch digest --help)"]
    assert not (tmp_path / "old.html").exists() and smtp.messages == []
    assert "outbox: 0 pending, 0 sent, 0 failed" in cli("status", check=True).stdout    # nothing composed either
