"""A watched site cannot make postwatch fetch internal pages, nor cost it hours with a flood of
links; a link on another port of the site's host is another origin."""
from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import date
from types import SimpleNamespace

import pytest
from scrapy.http import Request
from twisted.internet.address import IPv4Address, IPv6Address

from crawler import addresses
from crawler.address_policy import refusal
from crawler.addresses import AddressNotAllowed, PublicAddressMiddleware, PublicAddressResolver
from crawler.plan import CrawlPlan, SourceSpec
from crawler.run import crawl
from crawler.runtime import run
from crawler.urls import canonicalize
from support.harness import Cli, write_config
from postwatch.testing.replica import BlogReplica, ReplicaPost, WordPressReplica, generate_posts

FAST = {"DOWNLOAD_DELAY": 0, "AUTOTHROTTLE_ENABLED": False, "RETRY_BACKOFF_BASE": 0.05, "DOWNLOAD_TIMEOUT": 5,
        "RETRY_TIMES": 1}
SECRET = json.dumps({"Code": "Success", "AccessKeyId": "ASIAEXAMPLEKEY", "SecretAccessKey": "wJalrXUtnFEMI"}).encode()


def _metadata_service() -> BlogReplica:
    """A fake cloud metadata service on another loopback origin (Linux routes all of 127/8)."""
    service = BlogReplica(host="127.0.0.2")
    for path in ("/latest/meta-data/iam/security-credentials/role", "/secret"):
        service.route(path, lambda entry: (200, {"Content-Type": "text/html"}, b"<html><body><h1>AccessKeyId</h1><p>"
                                           + SECRET + b"</p></body></html>"))
    return service


def _feed_with(site: WordPressReplica, extra_items: str):
    def handler(entry):
        body = site.render_feed().replace(b"</channel>", extra_items.encode() + b"</channel>")
        return 200, {"Content-Type": "application/rss+xml; charset=utf-8"}, body
    return handler


def _wordpress_config(tmp_path, site, smtp_port: int):
    path = write_config(tmp_path, site.blog_url, smtp_port)
    text = path.read_text().replace('kind = "link"', f'kind = "feed"\nfeed_url = "{site.base_url}/feed/"')
    path.write_text(text)
    return Cli(path)


def _database_text(folder) -> str:
    with sqlite3.connect(folder / "state.db") as db:
        return "\n".join(db.iterdump())


def test_feed_entries_and_redirects_to_another_private_origin_are_never_fetched(tmp_path, smtp):
    with _metadata_service() as service, WordPressReplica(feed_content=False) as site:
        cli = _wordpress_config(tmp_path, site, smtp.port)
        cli("subscribers", "add", "ada@example.org", check=True)
        cli("check", check=True)                                  # baseline

        fresh = site.add_post("Fresh news from the field", body_paragraphs=["A real paragraph of fresh news."])
        moved = site.add_post("A post that moved away", body_paragraphs=["Never read."])
        moved_path = site.post_url(moved).removeprefix(site.base_url)
        site.set_fault(moved_path, status=302,
                       headers={"Location": f"{service.base_url}/latest/meta-data/iam/security-credentials/role"})
        site.route("/feed/", _feed_with(site, (
            f"<item><title>Our cloud credentials</title><link>{service.base_url}/secret</link>"
            f"<guid>{service.base_url}/secret</guid><description>Read the page.</description></item>")))

        checked = cli("check", check=True)
        preview = tmp_path / "preview.html"
        cli("digest", "preview", str(preview), "--subscriber", "ada@example.org", check=True)
        cli("digest", check=True)

        assert service.requests == []
        assert "a loopback address; postwatch fetches only public addresses" in checked.stderr
        assert f"{service.base_url}/latest/meta-data/iam/security-credentials/role" in checked.stderr
        [message] = smtp.messages
        text = "\n".join(part.get_content() for part in message.walk() if part.get_content_maintype() == "text")
        assert fresh.title in text and "A real paragraph of fresh news." in text
        assert moved.title in text and "Our cloud credentials" in text     # listed from their feed line
        assert "AccessKeyId" not in text
        assert "AccessKeyId" not in _database_text(tmp_path)
        assert fresh.title in preview.read_text() and "AccessKeyId" not in preview.read_text()


def test_a_name_that_resolves_to_loopback_is_another_origin_than_the_source_on_127_0_0_1():
    with WordPressReplica(feed_content=False) as site:
        site.route("/secret", lambda entry: (200, {"Content-Type": "text/html"}, b"<p>AccessKeyId</p>"))
        site.route("/feed/", _feed_with(site, (
            f"<item><title>Internal</title><link>http://localhost:{site.port}/secret</link>"
            f"<guid>http://localhost:{site.port}/secret</guid><description>x</description></item>")))
        source = SourceSpec(name="wp", url=site.blog_url, kind="feed", feed_url=f"{site.base_url}/feed/")
        report = run(lambda: crawl(CrawlPlan(source=source, known_urls={canonicalize(site.post_url(p)) for p in site.posts}),
                                   FAST))
        assert report.ok, report.error
        assert site.count("/secret") == 0
        reason = report.failed[f"http://localhost:{site.port}/secret"]
        assert "resolves to" in reason and "a loopback address; postwatch fetches only public addresses" in reason
        assert "Internal" in [post.title for post in report.posts]


def test_sources_test_refuses_a_listing_that_redirects_to_another_private_origin(tmp_path, smtp):
    with _metadata_service() as service, BlogReplica() as site:
        site.set_fault("/blog", status=301, headers={"Location": f"{service.base_url}/secret"})
        cli = Cli(write_config(tmp_path, site.blog_url, smtp.port))
        result = cli("sources", "test", site.blog_url)
        assert result.returncode == 1
        assert service.requests == []
        assert f"{service.base_url}/secret is on 127.0.0.2, a loopback address" in result.stdout + result.stderr
        assert "AccessKeyId" not in result.stdout + result.stderr


# -- the policy with made-up resolutions (nothing here reaches the internet) -----------------
@pytest.mark.parametrize("address, kind", [
    ("10.0.0.5", "private"), ("192.168.1.1", "private"), ("172.16.0.1", "private"), ("127.0.0.1", "loopback"),
    ("169.254.169.254", "link-local"), ("0.0.0.0", "unspecified"), ("224.0.0.251", "multicast"),
    ("100.64.0.1", "non-public"), ("240.0.0.1", "private"), ("::1", "loopback"), ("fe80::1", "link-local"),
    ("fd00::1", "unique-local"), ("::", "unspecified"), ("ff02::1", "multicast"),
    ("::ffff:10.0.0.5", "private"), ("::ffff:169.254.169.254", "link-local"),
])
def test_non_public_addresses_are_refused_by_kind(address, kind):
    reason = refusal("http://blog.example/post", [address])
    assert reason == f"http://blog.example/post resolves to {address}, {'an' if kind[0] in 'aeiou' else 'a'} {kind} address; " \
                     "postwatch fetches only public addresses"


def test_public_addresses_pass_and_one_private_answer_among_public_ones_is_refused():
    assert refusal("https://blog.example/post", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]) is None
    assert "10.0.0.5, a private address" in refusal("https://blog.example/post", ["93.184.216.34", "10.0.0.5"])
    assert "not an http(s) URL" in refusal("file:///etc/passwd", [])


def test_a_private_source_may_use_its_own_origin_only():
    source = "http://127.0.0.1:8080/blog"
    assert refusal("http://127.0.0.1:8080/blog/post", ["127.0.0.1"], source) is None
    for other in ("http://127.0.0.1:8081/x", "https://127.0.0.1:8080/x", "http://127.0.0.2:8080/x"):
        assert "a loopback address" in refusal(other, [other.split("/")[2].split(":")[0]], source)
    assert "a loopback address" in refusal("http://localhost:8080/x", ["127.0.0.1"], source)


def _middleware(table: dict[str, list[str]], monkeypatch) -> PublicAddressMiddleware:
    async def fake_resolve(host, port):
        return list(table[host])

    monkeypatch.setattr(addresses, "resolve", fake_resolve)
    monkeypatch.setattr(addresses, "install_resolver", lambda: None)
    stats = SimpleNamespace(inc_value=lambda *a, **k: None)
    settings = SimpleNamespace(getbool=lambda name, default=None: True)
    return PublicAddressMiddleware(SimpleNamespace(settings=settings, stats=stats))


def _request(url: str, source_url: str, **meta) -> Request:
    return Request(url, meta={"source": "blog", "source_url": source_url, **meta})


def test_a_public_source_whose_redirect_goes_to_loopback_is_refused(monkeypatch):
    table = {"blog.example": ["93.184.216.34"], "127.0.0.1": ["127.0.0.1"]}
    middleware = _middleware(table, monkeypatch)
    source = "https://blog.example/"

    async def go():
        assert await middleware.process_request(_request("https://blog.example/post", source)) is None
        redirected = _request("http://127.0.0.1/latest/meta-data/", source, redirect_urls=["https://blog.example/post"])
        with pytest.raises(AddressNotAllowed, match=r"^http://127\.0\.0\.1/latest/meta-data/ is on 127\.0\.0\.1, "
                                                    r"a loopback address; postwatch fetches only public addresses$"):
            await middleware.process_request(redirected)

    asyncio.run(go())


def test_a_public_source_whose_own_name_turns_private_mid_check_is_refused(monkeypatch):
    table = {"blog.example": ["93.184.216.34"]}
    middleware = _middleware(table, monkeypatch)
    source = "https://blog.example/"

    async def go():
        assert await middleware.process_request(_request("https://blog.example/", source)) is None
        table["blog.example"] = ["169.254.169.254"]                   # DNS rebinding
        with pytest.raises(AddressNotAllowed, match="169.254.169.254, a link-local address"):
            await middleware.process_request(_request("https://blog.example/latest/meta-data/", source))

    asyncio.run(go())


def test_each_source_in_one_crawl_may_use_only_its_own_private_origin(monkeypatch):
    table = {"127.0.0.1": ["127.0.0.1"], "blog.example": ["93.184.216.34"]}
    middleware = _middleware(table, monkeypatch)
    replica, public = "http://127.0.0.1:8080/blog", "https://blog.example/"

    async def go():
        assert await middleware.process_request(_request("http://127.0.0.1:8080/blog/post", replica)) is None
        # The public source's feed links to the other source's private origin: refused for it.
        with pytest.raises(AddressNotAllowed, match="a loopback address"):
            await middleware.process_request(_request("http://127.0.0.1:8080/blog/post", public))
        with pytest.raises(AddressNotAllowed, match="a loopback address"):
            await middleware.process_request(Request("http://127.0.0.1:8080/blog/post"))   # no source at all

    asyncio.run(go())


class _Receiver:
    def __init__(self):
        self.addresses = []
        self.done = False

    def resolutionBegan(self, resolution):  # noqa: N802
        pass

    def addressResolved(self, address):  # noqa: N802
        self.addresses.append(address.host)

    def resolutionComplete(self):  # noqa: N802
        self.done = True


class _FakeSystemResolver:
    def __init__(self, answers):
        self.answers = answers

    def resolveHostName(self, receiver, name, port=0, types=None, semantics="TCP"):  # noqa: N802
        receiver.resolutionBegan(None)
        for address in self.answers[name]:
            receiver.addressResolved((IPv6Address if ":" in address else IPv4Address)("TCP", address, port))
        receiver.resolutionComplete()


def test_the_connecting_resolver_uses_approved_answers_and_drops_private_ones():
    system = _FakeSystemResolver({"rebind.example": ["93.184.216.34", "10.0.0.5", "::ffff:127.0.0.1"],
                                  "127.0.0.2": ["127.0.0.2"]})
    resolver = PublicAddressResolver(reactor=None, original=system)

    fresh = _Receiver()
    resolver.resolveHostName(fresh, "rebind.example", 80)
    assert fresh.addresses == ["93.184.216.34"] and fresh.done

    addresses.pin("pinned.example", ["127.0.0.1"])                 # approved for a private source
    pinned = _Receiver()
    resolver.resolveHostName(pinned, "pinned.example", 80)
    assert pinned.addresses == ["127.0.0.1"] and pinned.done

    literal = _Receiver()
    resolver.resolveHostName(literal, "127.0.0.2", 80)
    assert literal.addresses == ["127.0.0.2"]


# -- item 9: a listing with 10,000 links --------------------------------------------------
@pytest.mark.timeout(600)   # ~50 s here on a shared machine: four CLI runs, 10,000 posts stored
def test_a_listing_with_ten_thousand_new_links_is_held_after_a_capped_number_of_fetches(tmp_path, smtp):
    with BlogReplica(posts=generate_posts(40)) as site:
        cli = Cli(write_config(tmp_path, site.blog_url, smtp.port))
        cli("subscribers", "add", "ada@example.org", check=True)
        cli("check", check=True)                                  # baseline: 40 posts
        # 10,000 short new posts on one listing page (short, so the page stays under the 3 MB
        # that extraction reads).
        flood = [ReplicaPost(slug=f"flood-{n}", title=f"Flood {n}", published=date(2030, 1, 1), body_paragraphs=["Short."])
                 for n in range(10_000)]
        with site._lock:
            site._posts[:0] = flood
            site.page_size = 20_000
            site.url_variants = False
            site._tick()
        site.clear_log()

        checked = cli("check", timeout=500)
        cli("digest", check=True)

        assert checked.returncode == 0, checked.stderr
        post_pages = site.count("/blog/")
        assert post_pages <= 50
        assert len(site.requests) <= 50 + 3
        assert "held" in (checked.stdout + checked.stderr).lower()
        assert "9950 new posts beyond max_post_pages = 50" in checked.stderr
        assert smtp.messages == []
        with sqlite3.connect(tmp_path / "state.db") as db:
            assert db.execute("select count(*) from posts").fetchone()[0] == 10_040


def test_max_post_pages_must_be_at_least_one(tmp_path):
    from postwatch.config import load_config, scrapy_overrides

    path = write_config(tmp_path, "http://127.0.0.1:9/blog", None, extra="")
    path.write_text(path.read_text().replace("[crawl]\n", "[crawl]\nmax_post_pages = 0\n"))
    result = Cli(path)("config", "check")
    assert result.returncode != 0
    assert "[crawl] max_post_pages must be between 1 and 100000, not 0" in result.stdout + result.stderr
    path.write_text(path.read_text().replace("max_post_pages = 0", "max_post_pages = 7"))
    assert scrapy_overrides(load_config(path))["MAX_POST_PAGES"] == 7


# -- item 12: another port is another origin ----------------------------------------------
def test_canonicalize_keeps_another_port_on_the_sites_host():
    assert canonicalize("http://example.org:8080/x", site="https://example.org/blog") == "http://example.org:8080/x"
    assert canonicalize("http://www.example.org/x/", site="https://example.org/blog") == "https://example.org/x"
    assert canonicalize("http://127.0.0.1/x", site="http://127.0.0.1:5000/blog") == "http://127.0.0.1/x"
    assert canonicalize("http://127.0.0.1:5000/x/", site="http://127.0.0.1:5000/blog") == "http://127.0.0.1:5000/x"
