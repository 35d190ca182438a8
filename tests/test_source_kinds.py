"""Kinds of source are a registry of classes: a new kind is one class, named in the config."""
from __future__ import annotations

import json

import pytest

from crawler.dates import parse_date
from crawler.extract import ListingEntry, selector_for
from crawler.kinds import SourceKind
from crawler.runtime import run
from crawler.urls import canonicalize
from postwatch.config import ConfigError, load_config
from postwatch.testing.replica import BlogReplica


class JsonIndexKind(SourceKind):
    """A site whose listing page carries its posts as JSON in `<script id="posts">`."""

    __kind__ = "test-json-index"

    def listing_entries(self, sel, page_url, site):
        return [ListingEntry(url=canonicalize(entry["url"], base=page_url, site=site), title=entry["title"],
                             published=parse_date(entry["date"]), summary=None)
                for entry in json.loads(sel.css("script#posts::text").get() or "[]")]


def _serve_json_index(site: BlogReplica) -> str:
    """A listing page no built-in kind can read: the posts are only in a JSON script."""
    def index(_request):
        posts = [{"url": f"/blog/{p.slug}", "title": p.title, "date": p.published.isoformat()}
                 for p in site.posts if p.published]
        page = ('<html><head><title>Notes</title></head><body><div id="app"></div>'
                f'<script id="posts" type="application/json">{json.dumps(posts)}</script></body></html>')
        return 200, {"Content-Type": "text/html; charset=utf-8"}, page.encode()

    site.route("/notes", index)
    return f"{site.base_url}/notes"


def _config(tmp_path, url: str, kind: str, extra: str = ""):
    path = tmp_path / "postwatch.toml"
    path.write_text(f'''database = "state.db"

[crawl]
download_delay = 0
autothrottle = false

[[sources]]
name = "notes"
url = "{url}"
kind = "{kind}"
{extra}''', encoding="utf-8")
    return load_config(path)


def test_a_new_kind_is_one_class_and_a_config_that_names_it_crawls_with_it(tmp_path):
    from postwatch.app import App

    with BlogReplica() as site:
        url = _serve_json_index(site)
        dated = [p for p in site.posts if p.published]
        assert "test-json-index" in SourceKind.names()
        app = App.open(_config(tmp_path, url, "test-json-index"))
        try:
            first = run(lambda: app.checker.check_source("notes"))
            assert first.ok and first.baseline, first.error
            assert first.posts_seen == len(dated)

            fresh = site.add_post("Radio Broadcasts Reach the Border Regions", ["Broadcasts now reach the border. " * 5])
            second = run(lambda: app.checker.check_source("notes"))
            assert second.ok, second.error
            assert [(e.kind, e.url, e.title) for e in second.events] == [("new", site.post_url(fresh), fresh.title)]
            assert "Broadcasts now reach the border." in second.events[0].body_html   # the post page was read
        finally:
            app.close()


def test_the_same_page_read_as_a_built_in_kind_holds_no_posts(tmp_path):
    # What the test above found, it found through its own kind.
    from postwatch.app import App

    with BlogReplica() as site:
        app = App.open(_config(tmp_path, _serve_json_index(site), "auto"))
        try:
            summary = run(lambda: app.checker.check_source("notes"))
            assert summary.posts_seen == 0
        finally:
            app.close()


def test_link_is_still_accepted_as_the_old_name_of_webflow(tmp_path):
    config = _config(tmp_path, "https://libertyinnorthkorea.org/blog", "link")
    assert config.sources[0].kind == "webflow"


def test_an_unknown_kind_is_refused_with_the_registered_names(tmp_path):
    with pytest.raises(ConfigError) as refused:
        _config(tmp_path, "https://blog.example.org/", "wordpress")
    assert "source 'notes': kind 'wordpress' must be one of auto, feed, html, selectors" in str(refused.value)
    assert "webflow" in str(refused.value) and "link," not in str(refused.value)


def test_a_selectors_source_must_say_where_its_posts_are(tmp_path):
    with pytest.raises(ConfigError, match="kind 'selectors' needs selectors.listing_item or selectors.post_link"):
        _config(tmp_path, "https://blog.example.org/", "selectors")
    config = _config(tmp_path, "https://blog.example.org/", "selectors",
                     '[sources.selectors]\nlisting_item = ".teaser"\n')
    assert config.sources[0].kind == "selectors"


def test_a_selectors_source_reads_only_what_its_selectors_find():
    page = selector_for('<html><body><main><article><h2><a href="/blog/guessed-post">A post found by guessing</a></h2>'
                        '</article><div class="teaser"><a href="/blog/chosen">The chosen one</a></div></main></body></html>',
                        "https://blog.example.org/blog")
    site = "https://blog.example.org/blog"
    selectors = {"listing_item": ".teaser"}
    entries, _ = SourceKind.named("selectors")(selectors).listing(page, site, site)
    assert [e.url for e in entries] == ["https://blog.example.org/blog/chosen"]
    guessed, _ = SourceKind.named("html")().listing(page, site, site)
    assert [e.url for e in guessed] == ["https://blog.example.org/blog/guessed-post"]
