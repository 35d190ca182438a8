"""Onboarding a blog and managing subscribers through the real CLI."""
from __future__ import annotations

from postwatch.testing.replica import StructuredDataReplica, WordPressReplica


def test_sources_test_add_list_and_check_a_wordpress_blog(cli):
    with WordPressReplica() as blog:
        shown = cli("sources", "test", blog.blog_url, check=True).stdout
        assert f"feed:    {blog.base_url}/feed/" in shown
        assert "20 found" in shown and "2025-10-08  At the Forefront" in shown
        cli("sources", "add", blog.blog_url, "--name", "wp", "--title", "WP replica", check=True)
        listed = cli("sources", "list", check=True).stdout
        assert "wp" in listed and f"feed={blog.base_url}/feed/" in listed and "(cli)" in listed
        assert "baseline recorded, 20 posts" in cli("check", "wp", check=True).stdout
        blog.add_post("A fresh WordPress post", body_paragraphs=["Long enough body text. " * 20])
        blog.clear_log()
        assert "wp: 1 new" in cli("check", "wp", check=True).stdout
        assert [r.path for r in blog.requests] == ["/feed/", "/"]          # feed plus one listing page


def test_sources_add_refuses_a_page_without_posts(cli, site):
    result = cli("sources", "add", f"{site.base_url}/robots.txt", "--name", "nothing")
    assert result.returncode == 1
    assert "nothing added" in result.stderr
    assert "nothing" not in cli("sources", "list", check=True).stdout


def test_a_structured_data_blog_is_added_without_selectors(cli):
    with StructuredDataReplica() as blog:
        cli("sources", "add", blog.blog_url, "--name", "sd", check=True)
        cli("check", "sd", check=True)
        blog.add_post("Structured and new", body_paragraphs=["Text."])
        out = cli("check", "sd", check=True).stdout
        assert "sd: 1 new" in out and "Structured and new" in out


def test_subscribers_import_validates_every_row(cli, tmp_path):
    csv_file = tmp_path / "people.csv"
    csv_file.write_text("email,cadence,at,tz,day\nada@example.org,daily,07:30,Europe/London,\n"
                        "not-an-address,daily,,,\nkim@example.org,weekly,09:00,Asia/Seoul,fri\n"
                        "lee@example.org,daily,25:00,UTC,\n", encoding="utf-8")
    result = cli("subscribers", "import", str(csv_file))
    assert result.returncode == 1
    assert "nothing imported: 2 rows refused" in result.stderr
    assert "people.csv:3" in result.stderr and "people.csv:5" in result.stderr
    assert "0 subscribers" in cli("subscribers", "list", check=True).stdout
    result = cli("subscribers", "import", str(csv_file), "--skip-invalid")
    assert "2 new, 0 updated, 0 duplicates, 2 refused" in result.stdout
    listed = cli("subscribers", "list", check=True).stdout
    assert "daily 07:30 Europe/London" in listed and "weekly, fri 09:00 Asia/Seoul" in listed


def test_history_status_and_release(cli, site):
    cli("check", check=True)
    for n in range(12):
        site.add_post(f"Burst post {n}", body_paragraphs=["x"])
    burst = cli("check", check=True).stdout
    assert "HELD as suspect" in burst
    status = cli("status", check=True).stdout
    assert "DEGRADED" in status and "12 held" in status
    assert "[held]" in cli("history", "link", check=True).stdout
    released = cli("sources", "release", "link", check=True).stdout
    assert "released 12 held events" in released
    assert "DEGRADED" not in cli("status", check=True).stdout
