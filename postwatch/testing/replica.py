"""Local replicas of blogs, served on 127.0.0.1 for the tests, the benchmarks and `postwatch demo`.

`BlogReplica` is the LiNK blog as Webflow serves it (collection lists, `?<hex>_page=N`
pagination, post pages with two related-post lists and the newsletter form);
`WordPressReplica` is a WordPress-style blog with an RSS feed; `StructuredDataReplica` is a blog
whose only machine-readable hints are JSON-LD and OpenGraph. All three answer conditional
requests (ETag / Last-Modified -> 304), log every request, can be changed between checks and can
be told to misbehave (status codes, delays, resets, arbitrary raw responses).
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import html
import json
import re
import socket
import socketserver
import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlsplit

# Real posts of libertyinnorthkorea.org/blog (link-blog-site.md): date as shown, title, slug.
LINK_POSTS = [
    ("December 16, 2019", "Finally Free", "finally-free"),
    ("December 16, 2019", "LiNK's Biggest Milestone Yet: 1,000 North Korean refugees rescued!", "1000-north-korean-refugees-rescued"),
    ("December 16, 2019", "The 2019 LiNK Advocacy Fellows: North Korean Defectors Raising Their Voices", "2019-link-advocacy-fellows-north-korean-defectors-raise-their-voices"),
    ("December 16, 2019", "Humans of North Korea: YuSung", "humans-of-north-korea-yusung"),
    ("April 5, 2022", "LiNK English Language Program: Meet the Students of Fall 2021", "link-english-language-program-meet-the-students-of-fall-2021"),
    ("April 22, 2022", "Foreign Media in North Korea - How Kpop is Challenging the Regime", "foreign-media-in-north-korea-how-kpop-is-challenging-the-regime"),
    ("December 13, 2022", "Time Travelers: North Korean Defectors Resettling in South Korea", "time-travelers-north-korean-defectors-resettling-in-south-korea"),
    ("March 17, 2023", "Women in North Korea: At the Forefront of Social and Political Change", "women-in-north-korea-at-the-forefront-of-social-and-political-change"),
    ("July 26, 2023", "One Day with the North Korean People | LiNK Summit 2023", "one-day-with-the-north-korean-people-link-summit-2023"),
    ("October 16, 2023", "Beyond Utopia: Documenting the Escape From North Korea", "beyond-utopia-documenting-the-escape-from-north-korea"),
    ("November 6, 2023", "URGENT: North Korean Refugees At Risk of Forced Repatriation", "urgent-north-korean-refugees-at-risk-of-forced-repatriation"),
    ("July 30, 2024", "North Korean Refugees Reaching their Potential: A Mid-Year Recap of 2024", "north-korean-refugees-reaching-their-potential-a-mid-year-recap-of-2024"),
    ("August 20, 2024", "North Koreans Learning English | Interview with LELP Student & Volunteer", "north-koreans-learning-english-interview-with-lelp-student-volunteer"),
    ("March 23, 2025", "Crisis for North Korean Human Rights NGOs: Urgent Support Needed", "crisis-for-north-korean-human-rights-ngos-urgent-support-needed"),
    ("April 17, 2025", "North Korean Soldiers in Russia-Ukraine War", "north-korean-soldiers-in-russia-ukraine-war"),
    ("May 19, 2025", "39 North Koreans Now Free | Liberty In North Korea's 2024 Annual Report", "39-north-koreans-now-free-liberty-in-north-koreas-2024-annual-report"),
    ("October 8, 2025", "At the Forefront of North Korean Human Rights Work | LiNK Organizational Update", "at-the-forefront-of-north-korean-human-rights-work-link-organizational-update"),
    (None, "North Korean Advocacy Fellows: Meet the Class of 2024!", "north-korean-advocacy-fellows-meet-the-class-of-2024"),
    (None, "An Exclusive Interview With LiNK's Field Manager", "exclusive-interview-with-links-field-manager"),
    (None, "New Realizations: An Interview with Hae Ri", "new-realizations-an-interview-with-hae-ri"),
]

FOREIGN_MEDIA_BODY = [
    "Movies, TV shows, and music hold power. They\u2019re a way for us to connect through common experiences, reckon with different sides of humanity, and revel in the beauty of being here at all.",
    "In recent years, South Korean media and entertainment has gained international recognition. People like Hyun Bin and Son Yejin, the stars of popular Korean drama Crash Landing on You, have become household names.",
    "Meanwhile, just across the border, North Korea remains one of the most closed societies in the world. Yet even in the \u201chermit kingdom,\u201d foreign media is accelerating empowerment of the people and change within the country!",
    "The North Korean government has maintained power for decades through a system of imposed isolation, relentless indoctrination, and brutal repression.",
    "Moving forward, increasing access to outside information is one of the most effective ways to help the North Korean people and bring forward change.",
]
FOREFRONT_BODY = [
    "Liberty in North Korea welcomes Sarah Yun as our new Chief Regional Officer (CRO), South Korea, as our previous South Korea Country Director, Sokeel Park, transitions into a new role as our Chief Strategy Officer (CSO).",
    "Sarah Yun brings a wealth of experience and expertise from her work to advance human rights in North Korea and across Asia during the past 15 years.",
    "North Korean refugees consistently tell us that getting more outside information into North Korea is crucial for empowering North Koreans to change their country.",
    "We look forward to increasing our impact with Sarah\u2019s leadership and sharing updates about our progress with our supporters.",
]
_FILLER = [
    "North Korean refugees who reach safety start new lives with the support of people around the world.",
    "Each rescue is a journey of thousands of miles through China and Southeast Asia, undertaken at great risk.",
    "Outside information, from radio broadcasts to dramas on USB drives, keeps changing how North Koreans see their country.",
    "Our team works with defectors to amplify their voices and to build the skills they need to thrive.",
    "Your support makes this work possible, and we are grateful to everyone who stands with the North Korean people.",
    "By Hannah Song",
    "These stories remind us that the North Korean people are the true drivers of change in their country.",
    "Resettlement brings its own challenges: a new language, new systems and the weight of family left behind.",
]


def slugify(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:80] or "post"


def format_display_date(value: date | None) -> str:
    return f"{value:%B} {value.day}, {value.year}" if value else ""


@dataclass
class ReplicaPost:
    slug: str
    title: str
    published: date | None
    body_paragraphs: list[str]
    subtitle: str | None = None
    modified: datetime = field(default_factory=lambda: _now())
    deleted: bool = False

    @property
    def excerpt(self) -> str:
        text = " ".join(self.body_paragraphs)
        return text[:157] + "..." if len(text) > 160 else text


@dataclass
class LoggedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    status: int
    body_bytes: int
    time: float                     # when the request arrived
    finished: float | None = None   # when its response was written (None: never, or still being written)


@dataclass
class _Fault:
    prefix: str
    status: int | None
    headers: dict[str, str]
    body: bytes | None
    delay: float | None
    reset: bool
    times: int | None


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def _seed_posts() -> list[ReplicaPost]:
    posts = []
    for index, (shown, title, slug) in enumerate(LINK_POSTS):
        published = datetime.strptime(shown, "%B %d, %Y").date() if shown else None
        if slug.startswith("foreign-media"):
            body = FOREIGN_MEDIA_BODY
        elif slug.startswith("at-the-forefront"):
            body = FOREFRONT_BODY
        else:
            body = [_FILLER[(index + k) % len(_FILLER)] for k in range(3 + index % 5)]
            body[0] = f"{title}: {body[0]}"
        posts.append(ReplicaPost(slug=slug, title=title, published=published, body_paragraphs=list(body)))
    return _newest_first(posts)


def _newest_first(posts: list[ReplicaPost]) -> list[ReplicaPost]:
    # Undated posts sort last; among equal dates the original order is kept.
    return sorted(posts, key=lambda p: p.published or date.min, reverse=True)


def generate_posts(n: int, start_date: date = date(2015, 1, 1)) -> list[ReplicaPost]:
    """n deterministic fake posts, one a day from start_date (newest first)."""
    posts = []
    for i in range(n):
        title = f"Generated post {i + 1}: {_FILLER[i % len(_FILLER)][:40].rstrip()}"
        body = [f"Generated body {i + 1}. " + _FILLER[(i + k) % len(_FILLER)] for k in range(3)]
        posts.append(ReplicaPost(slug=f"generated-post-{i + 1}", title=title,
                                 published=start_date + timedelta(days=i), body_paragraphs=body))
    return _newest_first(posts)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ReplicaHTTP/1.0"

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass

    def setup(self):
        super().setup()
        # Headers and body go out in two writes; without this, Nagle's algorithm and the
        # client's delayed ACK add ~40 ms to every keep-alive response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self):  # noqa: N802
        self.server.replica._handle(self)

    def do_HEAD(self):  # noqa: N802
        self.server.replica._handle(self, head=True)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self):
        # HTTPServer's own asks the resolver for the host's FQDN (a reverse lookup of a loopback
        # address, ~0.1 s each: 95 s to start a farm of 1,000 replicas) for a name nothing reads.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class BaseReplica:
    """The engine: post store, HTTP server, validators, log, faults. Subclasses render pages."""

    feed_path: str | None = None

    def __init__(self, posts: list[ReplicaPost] | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 robots_txt: str | None = None, sitemap: bool = False, feed: bool = False,
                 feed_content: bool = True, page_size: int = 9, gone_status: int = 404):
        self.host, self._port = host, port
        self._posts = list(posts) if posts is not None else self._default_posts()
        self._lock = threading.RLock()
        self.robots_txt = robots_txt if robots_txt is not None else "User-agent: *\nAllow: /\n"
        self.sitemap, self.feed, self.feed_content = sitemap, feed, feed_content
        self.page_size, self.gone_status = page_size, gone_status
        self.chrome_version = 0
        self.rotating_ads: set[str] = set()      # slugs whose article shows a different ad on every fetch
        self._ad_counter = 0
        self.site_modified = _now()
        self.requests: list[LoggedRequest] = []
        self._faults: list[_Fault] = []
        self._routes: dict[str, Callable] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def _default_posts(self) -> list[ReplicaPost]:
        return _seed_posts()

    # -- lifecycle -----------------------------------------------------------------------
    def start(self):
        self.bind()
        self._thread = threading.Thread(target=self._server.serve_forever, name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def bind(self) -> _Server:
        """The listening server, without a thread of its own: for a caller that serves many
        replicas from one selector loop (tests/support/farm.py) with `server.handle_request()`
        when the socket is readable. stop() closes it."""
        self._server = _Server((self.host, self._port), _Handler)
        self._server.replica = self
        return self._server

    def stop(self) -> None:
        if self._server:
            if self._thread is not None:
                self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server, self._thread = None, None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- content -------------------------------------------------------------------------
    @property
    def posts(self) -> list[ReplicaPost]:
        with self._lock:
            return [p for p in self._posts if not p.deleted]

    def post(self, slug: str) -> ReplicaPost:
        with self._lock:
            for p in self._posts:
                if p.slug == slug:
                    return p
        raise KeyError(slug)

    def add_post(self, title: str, body_paragraphs: list[str] | None = None, date: date | None = None,
                 slug: str | None = None) -> ReplicaPost:
        with self._lock:
            slug = slug or slugify(title)
            taken = {p.slug for p in self._posts}
            base, n = slug, 2
            while slug in taken:
                slug, n = f"{base}-{n}", n + 1
            post = ReplicaPost(slug=slug, title=title, published=date or _today(),
                               body_paragraphs=list(body_paragraphs or [f"{title}. " + _FILLER[0], _FILLER[1]]),
                               modified=self._tick())
            self._posts.insert(0, post)
            return post

    def edit_post(self, slug: str, *, title: str | None = None, body_paragraphs: list[str] | None = None) -> ReplicaPost:
        with self._lock:
            post = self.post(slug)
            if title is not None:
                post.title = title
            if body_paragraphs is not None:
                post.body_paragraphs = list(body_paragraphs)
            post.modified = self._tick()
            return post

    def delete_post(self, slug: str) -> None:
        with self._lock:
            self.post(slug).deleted = True
            self.post(slug).modified = self._tick()

    def restore_post(self, slug: str) -> None:
        with self._lock:
            self.post(slug).deleted = False
            self.post(slug).modified = self._tick()

    def change_chrome(self) -> None:
        """Related-post lists, newsletter form and navigation change; no post body does."""
        with self._lock:
            self.chrome_version += 1
            self._tick()

    def rotate_ads_in(self, slugs) -> None:
        """Put an ad that changes on every fetch inside the article body of these posts."""
        with self._lock:
            self.rotating_ads.update(slugs)
            self._tick()

    def _next_ad(self, post: ReplicaPost) -> str:
        if post.slug not in self.rotating_ads:
            return ""
        self._ad_counter += 1
        return f'<p class="inline-ad">Sponsored: offer #{self._ad_counter} of the day</p>'

    def set_robots(self, text: str) -> None:
        with self._lock:
            self.robots_txt = text
            self._tick()

    def _tick(self) -> datetime:
        # Last-Modified has one-second resolution: make every change visible to it.
        now = _now()
        if now <= self.site_modified:
            now = self.site_modified + timedelta(seconds=1)
        self.site_modified = now
        return now

    # -- log, faults, routes -------------------------------------------------------------
    def clear_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def count(self, path_prefix: str | None = None, status: int | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests
                       if (path_prefix is None or r.path.startswith(path_prefix)) and (status is None or r.status == status))

    def set_fault(self, path_prefix: str, *, status: int | None = None, headers: dict[str, str] | None = None,
                  body: bytes | str | None = None, delay: float | None = None, reset: bool = False,
                  times: int | None = None) -> None:
        if isinstance(body, str):
            body = body.encode()
        with self._lock:
            self._faults.append(_Fault(path_prefix, status, dict(headers or {}), body, delay, reset, times))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def route(self, path: str, handler: Callable[[LoggedRequest], tuple[int, dict[str, str], bytes]]) -> None:
        with self._lock:
            self._routes[path] = handler

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if path.startswith(fault.prefix):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    # -- HTTP ----------------------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler, head: bool = False) -> None:
        parts = urlsplit(handler.path)
        path, query = parts.path, parts.query
        headers = {k.lower(): v for k, v in handler.headers.items()}
        entry = LoggedRequest(handler.command, path, query, headers, 0, 0, time.time())
        with self._lock:
            self.requests.append(entry)
        fault = self._take_fault(path)
        if fault and fault.delay:
            time.sleep(fault.delay)
        if fault and fault.reset:
            entry.status = 0
            handler.close_connection = True
            try:
                handler.connection.shutdown(2)
            except OSError:
                pass
            return
        if fault and fault.status is not None:
            status, extra, body = fault.status, fault.headers, fault.body if fault.body is not None else f"HTTP {fault.status}\n".encode()
            return self._send(handler, entry, status, {"Content-Type": "text/plain", **extra}, body, head=head)
        with self._lock:
            route = self._routes.get(path)
        if route:
            status, extra, body = route(entry)
            return self._send(handler, entry, status, extra, body, head=head, raw=True)
        with self._lock:
            found = self.render(path, parse_qs(query))
        if found is None:
            return self._send(handler, entry, 404, {"Content-Type": "text/html; charset=utf-8"},
                              b"<html><body><h1>Page not found</h1></body></html>", head=head)
        status, content_type, body, modified = found
        response_headers = {"Content-Type": content_type}
        if status == 200:
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            response_headers["ETag"] = etag
            response_headers["Last-Modified"] = format_datetime(modified, usegmt=True)
            response_headers["Cache-Control"] = "max-age=0, must-revalidate"
            if self._not_modified(headers, etag, modified):
                return self._send(handler, entry, 304, {k: v for k, v in response_headers.items() if k != "Content-Type"}, b"", head=head)
        self._send(handler, entry, status, response_headers, body, head=head, gzip_ok="gzip" in headers.get("accept-encoding", ""))

    @staticmethod
    def _not_modified(headers: dict[str, str], etag: str, modified: datetime) -> bool:
        if "if-none-match" in headers:
            return etag in [t.strip() for t in headers["if-none-match"].split(",")] or headers["if-none-match"].strip() == "*"
        if "if-modified-since" in headers:
            try:
                return modified <= parsedate_to_datetime(headers["if-modified-since"])
            except (TypeError, ValueError):
                return False
        return False

    def _send(self, handler, entry, status, headers, body: bytes, *, head=False, gzip_ok=False, raw=False) -> None:
        if gzip_ok and len(body) > 256 and status == 200:
            body = gzip.compress(body, compresslevel=5)
            headers = {**headers, "Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
        entry.status, entry.body_bytes = status, (0 if head else len(body))
        try:
            handler.send_response(status)
            for key, value in headers.items():
                handler.send_header(key, value)
            if not raw or "Content-Length" not in headers:
                handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            if not head and status != 304:
                handler.wfile.write(body)
            handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        entry.finished = time.time()

    # -- rendering: subclasses -------------------------------------------------------------
    def render(self, path: str, query: dict) -> tuple[int, str, bytes, datetime] | None:
        if path == "/robots.txt":
            return 200, "text/plain; charset=utf-8", self.robots_txt.encode(), self.site_modified
        if path == "/sitemap.xml" and self.sitemap:
            urls = "".join(f"<url><loc>{self.post_url(p)}</loc><lastmod>{p.modified:%Y-%m-%dT%H:%M:%S+00:00}</lastmod></url>" for p in self.posts)
            body = f'<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{urls}</urlset>'
            return 200, "application/xml", body.encode(), self._latest()
        if self.feed and self.feed_path and path == self.feed_path:
            return 200, "application/rss+xml; charset=utf-8", self.render_feed(), self._latest()
        return self.render_page(path, query)

    def render_page(self, path: str, query: dict):
        raise NotImplementedError

    def post_url(self, post: ReplicaPost) -> str:
        raise NotImplementedError

    def _latest(self) -> datetime:
        with self._lock:
            return max([p.modified for p in self._posts] + [self.site_modified])

    def _find(self, slug: str) -> ReplicaPost | None:
        for post in self._posts:
            if post.slug == slug:
                return post
        return None

    def render_feed(self, encoding: str = "utf-8") -> bytes:
        items = []
        for post in self.posts[:20]:
            body = "".join(f"<p>{html.escape(p)}</p>" for p in post.body_paragraphs)
            pub = datetime.combine(post.published or date(2020, 1, 1), datetime.min.time(), timezone.utc)
            content = f"<content:encoded><![CDATA[{body}]]></content:encoded>" if self.feed_content else ""
            items.append(
                f"<item><title>{html.escape(post.title)}</title><link>{self.post_url(post)}</link>"
                f"<guid isPermaLink=\"true\">{self.post_url(post)}</guid><pubDate>{format_datetime(pub, usegmt=True)}</pubDate>"
                f"<description>{html.escape(post.excerpt)}</description>{content}</item>")
        return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/">'
                f"<channel><title>{html.escape(self.site_title)}</title><link>{self.base_url}/</link>"
                f"<description>Replica feed</description>{''.join(items)}</channel></rss>").encode(encoding, "replace")

    site_title = "Replica blog"


def _today() -> date:
    return datetime.now(timezone.utc).date()


class BlogReplica(BaseReplica):
    """The LiNK blog on Webflow."""

    site_title = "Liberty in North Korea"
    feed_path = "/blog/rss.xml"
    LIST_PARAM = "3c5a2b1f_page"
    RELATED_PARAMS = ("9801781a_page", "bb7dccd8_page")

    def __init__(self, posts=None, *, url_variants: bool = True, **kwargs):
        super().__init__(posts, **kwargs)
        self.url_variants = url_variants

    @property
    def blog_url(self) -> str:
        return f"{self.base_url}/blog"

    def post_url(self, post: ReplicaPost) -> str:
        return f"{self.base_url}/blog/{post.slug}"

    def _head(self, title: str, canonical: str | None = None) -> str:
        feed = f'<link rel="alternate" type="application/rss+xml" href="{self.feed_path}">' if self.feed else ""
        canon = f'<link rel="canonical" href="{canonical}">' if canonical else ""
        return (f'<!DOCTYPE html><html data-wf-domain="libertyinnorthkorea.org" data-wf-page="5e0f{self.chrome_version:04d}" '
                f'data-wf-site="5dc9c0a3"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
                f'<meta content="Webflow" name="generator"><meta name="viewport" content="width=device-width, initial-scale=1">'
                f'{canon}{feed}<link href="/css/link.webflow.css?v={self.chrome_version}" rel="stylesheet"></head><body>'
                f'<div class="navbar w-nav" role="banner"><a href="/" class="brand w-nav-brand">LiNK</a><nav class="nav-menu w-nav-menu">'
                f'<a href="/about" class="nav-link w-nav-link">About</a><a href="/blog" class="nav-link w-nav-link">Blog</a>'
                f'<a href="/donate" class="nav-link w-nav-link">{"Donate" if self.chrome_version % 2 == 0 else "Give now"}</a></nav></div>')

    def _foot(self) -> str:
        logos = ["Refinery29", "CNN", "Fox News", "Time Magazine", "the Washington Post", "National Public Radio"]
        return ('<div class="press-logos">' + "".join(f'<img src="/img/{slugify(l)}.svg" alt="The logo for {l}">' for l in logos)
                + '</div><footer class="footer">&copy; Liberty in North Korea</footer>'
                + '<script src="/js/webflow.js" type="text/javascript"></script></body></html>')

    def _card(self, post: ReplicaPost, href: str) -> str:
        return (f'<div role="listitem" class="w-dyn-item"><a href="{href}" class="blog-card-link w-inline-block">'
                f'<h3 class="blog-title">{html.escape(post.title)}</h3></a>'
                f'<div class="blog-date">{format_display_date(post.published)}</div>'
                f'<p class="blog-excerpt">{html.escape(post.excerpt)}</p></div>')

    def render_page(self, path: str, query: dict):
        if path in ("/blog", "/blog/"):
            return self._render_listing(query)
        match = re.fullmatch(r"/blog/([^/]+)/?", path)
        if match:
            post = self._find(match.group(1))
            if post is None:
                return None
            if post.deleted:
                return self.gone_status, "text/html; charset=utf-8", b"<html><body><h1>Page not found</h1></body></html>", post.modified
            return self._render_post(post, query)
        return None

    def _render_listing(self, query: dict):
        posts = self.posts
        pages = max(1, -(-len(posts) // self.page_size))
        try:
            page = int((query.get(self.LIST_PARAM) or ["1"])[0])
        except ValueError:
            page = 1
        if not 1 <= page <= pages:
            page = 1
        chunk = posts[(page - 1) * self.page_size: page * self.page_size]
        cards = []
        for index, post in enumerate(chunk):
            href = f"/blog/{post.slug}"
            if self.url_variants:
                variant = index % 5
                href = [href, href + "/", f"{href}?9801781a_page=2", f"{href}#comments",
                        f"{self.base_url}{href}"][variant]
            cards.append(self._card(post, href))
        pager = '<div role="navigation" aria-label="List" class="w-pagination-wrapper">'
        if page > 1:
            pager += f'<a href="?{self.LIST_PARAM}={page - 1}" aria-label="Previous Page" class="w-pagination-previous">Previous</a>'
        if page < pages:
            pager += f'<a href="?{self.LIST_PARAM}={page + 1}" aria-label="Next Page" class="w-pagination-next">Next</a>'
        pager += "</div>"
        body = (self._head("Blog | Liberty in North Korea") + '<div class="section"><h1 class="page-title">Blog</h1>'
                f'<div class="w-dyn-list"><div role="list" class="w-dyn-items">{"".join(cards)}</div>{pager}</div></div>'
                + self._foot())
        modified = max([p.modified for p in chunk] + [self.site_modified])
        return 200, "text/html; charset=utf-8", body.encode(), modified

    def _related(self, post: ReplicaPost, which: int, query: dict) -> str:
        others = [p for p in self.posts if p.slug != post.slug]
        shift = (self.chrome_version * 3 + which * 5) % max(1, len(others))
        others = others[shift:] + others[:shift]
        param = self.RELATED_PARAMS[which]
        try:
            page = int((query.get(param) or ["1"])[0])
        except ValueError:
            page = 1
        chunk = others[(page - 1) * 3: page * 3] or others[:3]
        cards = "".join(f'<div role="listitem" class="w-dyn-item related-card"><a href="/blog/{p.slug}" class="related-link">'
                        f'<h4>{html.escape(p.title)}</h4></a><p>{html.escape(p.excerpt)}</p></div>' for p in chunk)
        return (f'<div class="related-posts"><h3>{"Check these out!" if which == 0 else "More from the blog"}</h3>'
                f'<div class="w-dyn-list"><div role="list" class="w-dyn-items">{cards}</div>'
                f'<div class="w-pagination-wrapper"><a href="?{param}={page + 1}" class="w-pagination-next">Next</a></div></div></div>')

    def _render_post(self, post: ReplicaPost, query: dict):
        paragraphs = []
        for index, text in enumerate(post.body_paragraphs):
            paragraphs.append(f"<p>{html.escape(text)}</p>")
            if index == 0 and len(post.body_paragraphs) > 2:
                paragraphs.append('<figure class="w-richtext-figure-type-image w-richtext-align-center"><div>'
                                  f'<img src="/img/{post.slug}.jpg" alt=""></div><figcaption>A photo for {html.escape(post.title)}</figcaption></figure>')
            if index == 1 and len(post.body_paragraphs) > 3:
                paragraphs.append("<h2>Why it matters</h2>")
        paragraphs.append(self._next_ad(post))
        form_done = "Awesome! You're subscribed!" if self.chrome_version % 2 == 0 else "Thank you! You're on the list."
        body = (self._head(f"{post.title} | Liberty in North Korea", canonical=self.post_url(post))
                + '<div class="section blog-post"><div class="blog-label">blog</div>'
                f'<h1 class="blog-post-title">{html.escape(post.title)}</h1>'
                f'<div class="blog-post-date">{format_display_date(post.published)}</div>'
                + (f'<div class="blog-subtitle">{html.escape(post.subtitle)}</div>' if post.subtitle else "")
                + f'<div class="blog-rich-text w-richtext">{"".join(paragraphs)}</div></div>'
                + self._related(post, 0, query) + self._related(post, 1, query)
                + '<div class="donate-cta"><h3>Your generous donation will rescue and support North Korean refugees</h3>'
                '<a href="/donate" class="button">Donate Now</a></div>'
                '<div class="newsletter w-form"><form id="email-form" name="email-form" method="get">'
                f'<label for="email">Learn more about the North Korean people{" (v%d)" % self.chrome_version if self.chrome_version else ""}</label>'
                '<input type="email" class="w-input" name="email" id="email"><input type="submit" value="Subscribe" class="w-button"></form>'
                f'<div class="w-form-done"><div>{form_done}</div></div>'
                '<div class="w-form-fail"><div>Oh no! Looks like something went wrong.</div></div></div>'
                + self._foot())
        modified = max(post.modified, self.site_modified)
        return 200, "text/html; charset=utf-8", body.encode(), modified


class WordPressReplica(BaseReplica):
    """A WordPress-style blog with an RSS feed at /feed/."""

    site_title = "Daily Replica News"
    feed_path = "/feed/"

    def __init__(self, posts=None, *, feed: bool = True, feed_encoding_lie: bool = False, **kwargs):
        super().__init__(posts, feed=feed, **kwargs)
        self.feed_encoding_lie = feed_encoding_lie

    @property
    def blog_url(self) -> str:
        return f"{self.base_url}/"

    def post_url(self, post: ReplicaPost) -> str:
        d = post.published or date(2020, 1, 1)
        return f"{self.base_url}/{d:%Y/%m/%d}/{post.slug}/"

    def render(self, path, query):
        if self.feed and path == self.feed_path and self.feed_encoding_lie:
            return 200, "application/rss+xml; charset=utf-8", self.render_feed(encoding="windows-1252"), self._latest()
        return super().render(path, query)

    def _page(self, title: str, main: str) -> bytes:
        feed = f'<link rel="alternate" type="application/rss+xml" title="Feed" href="{self.base_url}/feed/">' if self.feed else ""
        recent = "".join(f'<li><a href="{self.post_url(p)}">{html.escape(p.title)}</a></li>' for p in self.posts[:5])
        return (f'<!DOCTYPE html><html lang="en-US"><head><meta charset="UTF-8"><title>{html.escape(title)}</title>'
                f'<meta name="generator" content="WordPress 6.5">{feed}</head><body class="wordpress">'
                f'<header id="masthead"><a href="/">{self.site_title}</a><nav><a href="/about/">About</a></nav></header>'
                f'<main id="main">{main}</main><aside id="secondary" class="widget-area"><section class="widget widget_recent_entries">'
                f'<h2>Recent Posts</h2><ul>{recent}</ul></section></aside><footer>Proudly powered by WordPress</footer></body></html>').encode()

    def render_page(self, path, query):
        match = re.fullmatch(r"/(?:page/(\d+)/)?", path)
        if match:
            page = int(match.group(1) or 1)
            posts = self.posts
            chunk = posts[(page - 1) * self.page_size: page * self.page_size]
            if not chunk and page > 1:
                return None
            arts = "".join(
                f'<article class="post type-post"><h2 class="entry-title"><a href="{self.post_url(p)}" rel="bookmark">{html.escape(p.title)}</a></h2>'
                f'<time class="entry-date published" datetime="{(p.published or date(2020, 1, 1)).isoformat()}T09:00:00+00:00">{format_display_date(p.published)}</time>'
                f'<div class="entry-summary"><p>{html.escape(p.excerpt)}</p></div></article>' for p in chunk)
            nav = f'<a class="next page-numbers" href="/page/{page + 1}/">Older posts</a>' if page * self.page_size < len(posts) else ""
            return 200, "text/html; charset=UTF-8", self._page(self.site_title, arts + nav), self._latest()
        match = re.fullmatch(r"/\d{4}/\d{2}/\d{2}/([^/]+)/?", path)
        if match:
            post = self._find(match.group(1))
            if post is None:
                return None
            if post.deleted:
                return self.gone_status, "text/html", b"<h1>Not found</h1>", post.modified
            body = "".join(f"<p>{html.escape(t)}</p>" for t in post.body_paragraphs)
            main = (f'<article class="post"><header><h1 class="entry-title">{html.escape(post.title)}</h1>'
                    f'<time class="entry-date" datetime="{(post.published or date(2020, 1, 1)).isoformat()}T09:00:00+00:00">'
                    f'{format_display_date(post.published)}</time></header><div class="entry-content">{body}</div></article>'
                    f'<div id="comments" class="comments-area"><h2>{self.chrome_version + 2} comments</h2><p>Great post!</p></div>')
            return 200, "text/html; charset=UTF-8", self._page(post.title, main), max(post.modified, self.site_modified)
        return None


class StructuredDataReplica(BaseReplica):
    """A blog whose only hints are JSON-LD, OpenGraph, <time datetime> and <h1>."""

    site_title = "Structured Replica"

    @property
    def blog_url(self) -> str:
        return f"{self.base_url}/news/"

    def post_url(self, post: ReplicaPost) -> str:
        return f"{self.base_url}/news/{post.slug}"

    def render_page(self, path, query):
        if path in ("/news", "/news/"):
            links = "".join(f'<div class="c1"><div class="c2"><a href="/news/{p.slug}">{html.escape(p.title)}</a></div>'
                            f'<span>{html.escape(p.excerpt[:60])}</span></div>' for p in self.posts)
            body = (f'<!DOCTYPE html><html><head><title>News</title></head><body><div class="top"><a href="/">Home</a>'
                    f'<a href="/contact">Contact</a></div><div class="list">{links}</div><div class="bottom">(c)</div></body></html>')
            return 200, "text/html; charset=utf-8", body.encode(), self._latest()
        match = re.fullmatch(r"/news/([^/]+)/?", path)
        if match:
            post = self._find(match.group(1))
            if post is None:
                return None
            if post.deleted:
                return self.gone_status, "text/html", b"gone", post.modified
            published = datetime.combine(post.published or date(2020, 1, 1), datetime.min.time()).replace(
                hour=18, tzinfo=timezone(timedelta(hours=9)))
            ld = json.dumps({"@context": "https://schema.org", "@graph": [
                {"@type": "WebSite", "name": self.site_title},
                {"@type": "BlogPosting", "headline": post.title, "datePublished": published.isoformat(),
                 "author": {"@type": "Person", "name": "Staff"}, "url": self.post_url(post)}]})
            body = (f'<!DOCTYPE html><html><head><title>{html.escape(post.title)} - {self.site_title}</title>'
                    f'<meta property="og:title" content="{html.escape(post.title)}"><meta property="og:url" content="{self.post_url(post)}">'
                    f'<meta property="article:published_time" content="{published.isoformat()}">'
                    f'<script type="application/ld+json">{ld}</script></head><body><div class="top"><a href="/">Home</a></div>'
                    f'<main><h1>{html.escape(post.title)}</h1><time datetime="{published.isoformat()}">{format_display_date(post.published)}</time>'
                    f'<article>{"".join(f"<p>{html.escape(t)}</p>" for t in post.body_paragraphs)}</article>'
                    f'<aside class="related"><h2>Related</h2><a href="/news/{self.posts[0].slug}">{html.escape(self.posts[0].title)}</a>'
                    f'<p>version {self.chrome_version}</p></aside></main><footer>(c) Structured</footer></body></html>')
            return 200, "text/html; charset=utf-8", body.encode(), max(post.modified, self.site_modified)
        return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a local replica of the LiNK blog until Ctrl-C.")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--posts", type=int, default=0, help="serve N generated posts instead of the real titles")
    parser.add_argument("--feed", action="store_true", help="also publish an RSS feed at /blog/rss.xml")
    args = parser.parse_args(argv)
    site = BlogReplica(posts=generate_posts(args.posts) if args.posts else None, port=args.port, feed=args.feed)
    with site:
        print(f"LiNK blog replica at {site.blog_url} (Ctrl-C stops it)")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
