"""crawler/ is a Scrapy project a Scrapy user can drive with the scrapy command."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def scrapy(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "scrapy", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_scrapy_list_shows_the_spider():
    result = scrapy("list")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["blog"]


def test_scrapy_crawl_exports_the_posts_of_a_listing(site, tmp_path):
    out = tmp_path / "posts.jsonl"
    result = scrapy("crawl", "blog", "-a", f"url={site.blog_url}", "-a", "kind=link", "-s", "DOWNLOAD_DELAY=0",
                    "-s", "AUTOTHROTTLE_ENABLED=0", "-O", str(out))
    assert result.returncode == 0, result.stderr
    posts = [json.loads(line) for line in out.read_text().splitlines()]
    assert {p["url"] for p in posts} == {f"{site.blog_url}/{p.slug}" for p in site.posts}
    assert {p["origin"] for p in posts} == {"listing"}
