"""The one spider: reads a blog's feed and/or listing pages incrementally and its post pages
only when needed."""
from __future__ import annotations

from scrapy import Request, Spider
from scrapy.exceptions import IgnoreRequest
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.internet.error import DNSLookupError, TCPTimedOutError, TimeoutError as TwistedTimeout

from crawler.extract import discover_feeds, extract_listing, extract_post, html_to_summary, selector_for
from crawler.feeds import parse_feed
from crawler.items import PostItem
from crawler.urls import LINK_BLOG_URL, canonicalize

POST_STATUSES = [304, 404, 410]


class BlogSpider(Spider):
    """Arguments: `plan` (crawler.run.CrawlPlan) and `report` (crawler.run.CrawlReport).

    - Every request is conditional; a 304 on the listing (or feed) ends a normal check.
    - Only posts not yet known get their page fetched; pagination stops at the first listing
      page that holds no unknown post. The baseline walks every listing page and fetches no post.
    - A full sweep re-requests the known post pages conditionally: 304 unchanged, 404/410 gone.
    - Posts in `plan.recheck_urls` are re-read without validators (an edit seen once is
      confirmed only by a fetch that sees the same content); `plan.recheck_feed` does the same
      for the feed (and the listing that leads to it).
    """

    name = "blog"

    def __init__(self, plan=None, report=None, **kwargs):
        if plan is None:
            # From the command line, like any Scrapy spider:
            #   scrapy crawl blog -a url=https://libertyinnorthkorea.org/blog -a kind=link -O posts.jsonl
            from crawler.run import CrawlPlan, CrawlReport, SourceSpec

            source = SourceSpec(name=kwargs.pop("source", "blog"), url=kwargs.pop("url", LINK_BLOG_URL),
                                kind=kwargs.pop("kind", "auto"), feed_url=kwargs.pop("feed_url", None))
            plan = CrawlPlan(source=source, baseline=kwargs.pop("baseline", "yes").lower() not in ("0", "no", "false"))
            report = CrawlReport(source_name=source.name)
        super().__init__(**kwargs)
        self.plan, self.report = plan, report
        self.source = plan.source
        self.site = plan.source.url
        self.requested_posts: set[str] = set()
        self.complete_in_feed: set[str] = set()
        self.listing_pages = 0
        self.post_pages = 0
        self.posts_not_fetched: set[str] = set()

    async def start(self):
        source = self.source
        if source.feed_url:
            # The listing is read after the feed, so posts the feed carried in full need no page.
            yield self._feed_request(source.feed_url)
        else:
            yield self._listing_request(source.url, first=True)
        for url in self.plan.recheck_urls:
            request = self._post_request(url, sweep=True, conditional=False)
            if request:
                yield request
        for url in self.plan.sweep_urls:
            request = self._post_request(url, sweep=True)
            if request:
                yield request

    # -- requests ------------------------------------------------------------------------
    def _feed_request(self, url: str) -> Request:
        return Request(url, callback=self.parse_feed, errback=self.on_listing_error, dont_filter=True,
                       meta={"conditional": not self.plan.recheck_feed, "handle_httpstatus_list": [304], "role": "feed"})

    def _listing_request(self, url: str, first: bool = False) -> Request:
        return Request(url, callback=self.parse_listing, errback=self.on_listing_error, dont_filter=True,
                       meta={"conditional": not (first and self.plan.recheck_feed), "handle_httpstatus_list": [304],
                             "role": "listing", "first": first})

    def _post_request(self, url: str, sweep: bool = False, link: str | None = None,
                      conditional: bool = True) -> Request | None:
        if url in self.requested_posts:
            return None
        if not sweep:
            # The post is reported from its listing/feed line anyway; beyond the cap its page
            # waits, so that a flood of links is judged by the flood guard before it costs hours.
            if self.post_pages >= self.settings.getint("MAX_POST_PAGES", 50):
                self.posts_not_fetched.add(url)
                return None
            self.post_pages += 1
        self.requested_posts.add(url)
        # Fetch the address the site itself links to (a canonical form without the trailing
        # slash would cost a redirect on WordPress); the post's identity stays `url`.
        fetch = link if link and canonicalize(link, site=self.site) == url else url
        return Request(fetch, callback=self.parse_post, errback=self.on_post_error, dont_filter=True,
                       meta={"conditional": conditional, "handle_httpstatus_list": POST_STATUSES, "post_url": url, "sweep": sweep,
                             "validator_key": url})

    def closed(self, reason):
        if self.posts_not_fetched:
            self.report.warnings.append(
                f"{self.source.name}: {len(self.posts_not_fetched)} new posts beyond max_post_pages = "
                f"{self.settings.getint('MAX_POST_PAGES', 50)} were taken from the listing/feed without "
                "fetching their pages in this check")

    # -- feed ----------------------------------------------------------------------------
    def parse_feed(self, response):
        self.report.feed_read = True
        if response.status == 304:
            if self.source.kind != "feed" and not response.meta.get("discovered"):
                yield self._listing_request(self.source.url, first=True)   # the listing decides
            else:
                self.report.not_modified = True
            return
        result = parse_feed(response.body, response.url, _headers(response), site=self.site)
        if result.error:
            self.report.fail(f"{self.source.name}: {result.error}")
            return
        if result.warning:
            self.report.warnings.append(f"{self.source.name}: {result.warning}")
        self.complete_in_feed = {item.url for item in result.entries if item.body_html}
        if self.source.kind != "feed" and not response.meta.get("discovered"):
            yield self._listing_request(self.source.url, first=True)
        for item in result.entries:
            if item.body_html or self.plan.baseline or item.url in self.plan.known_urls:
                yield item
            else:
                # A summary-only feed: the page has the body, but only for posts not seen before.
                yield item
                request = self._post_request(item.url, link=item.link)
                if request:
                    yield request

    # -- listing -------------------------------------------------------------------------
    def parse_listing(self, response):
        first = response.meta.get("first")
        if response.status == 304:
            if first:
                self.report.not_modified = True
            return
        self.listing_pages += 1
        if not hasattr(response, "text"):
            self.report.fail(f"{self.source.name}: listing {response.url} is not an HTML page")
            return
        sel = selector_for(response.text, response.url)
        if first and self.source.kind == "auto" and not self.source.feed_url:
            feeds = discover_feeds(sel, response.url)
            if feeds:
                self.report.discovered_feed = feeds[0]
                request = self._feed_request(feeds[0])
                request.meta["discovered"] = True
                yield request
        entries, next_url = extract_listing(sel, response.url, self.site, kind=self.source.kind,
                                            selectors=self.source.selectors)
        self.report.listing_entries += len(entries)
        if first and not entries and not self.report.discovered_feed:
            self.report.empty_listing = True
        for entry in entries:
            known = entry.url in self.plan.known_urls or entry.url in self.complete_in_feed
            yield PostItem(url=entry.url, title=entry.title, published=entry.published, body_html=None,
                           summary=entry.summary, origin="listing")
            if not known and not self.plan.baseline:
                request = self._post_request(entry.url, link=entry.link)
                if request:
                    yield request
        # Listings are newest first: once the page ends on a known post, older pages hold only
        # known posts (a pinned post at the top does not end the walk early).
        ends_unknown = bool(entries) and entries[-1].url not in self.plan.known_urls
        if next_url and (self.plan.baseline or ends_unknown) and self.listing_pages < self.settings.getint("MAX_LISTING_PAGES", 500):
            yield self._listing_request(next_url)
        elif self.plan.baseline and not next_url:
            self.report.listing_complete = True

    # -- post pages ----------------------------------------------------------------------
    def parse_post(self, response):
        url = response.meta["post_url"]
        if response.status == 304:
            self.report.unchanged_urls.add(url)
            return
        if response.status in (404, 410):
            self.report.gone[url] = response.status
            return
        if not hasattr(response, "text"):
            self.report.failed[url] = f"{url} is not an HTML page"
            return
        page = extract_post(selector_for(response.text, response.url), response.url, self.site,
                            kind=self.source.kind, selectors=self.source.selectors)
        # A known post keeps the identity it was stored under; a new one takes rel=canonical.
        identity = url if response.meta.get("sweep") or url in self.plan.known_urls else page.url
        if identity != url:
            self.report.aliases[url] = identity
        yield PostItem(url=identity, title=page.title, published=page.published, body_html=page.body_html,
                       summary=html_to_summary(page.body_html), origin="page")

    # -- errors --------------------------------------------------------------------------
    def on_listing_error(self, failure):
        request = failure.request
        what = request.meta.get("role", "listing")
        self.report.fail(f"{self.source.name}: {what} {request.url} {describe_failure(failure, request)}")

    def on_post_error(self, failure):
        request = failure.request
        self.report.failed[request.meta["post_url"]] = describe_failure(failure, request)


def _headers(response) -> dict[str, str]:
    return {k.decode("latin-1"): v[0].decode("latin-1") for k, v in response.headers.items() if v}


def describe_failure(failure, request) -> str:
    """One line a person can act on."""
    exc = failure.value
    attempts = request.meta.get("retry_times", 0) + 1
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    if isinstance(exc, HttpError):
        status = exc.response.status
        refused = request.meta.get("retry_after_refused")
        if refused:
            return f"answered HTTP {status} with Retry-After {refused:.0f}s (more than postwatch waits within a check)"
        return f"answered HTTP {status}{tries}"
    if isinstance(exc, IgnoreRequest):
        reason = str(exc)
        if reason.startswith(("http://", "https://")) and " could not be reached" in reason:
            return "could not be reached: " + reason.split(" could not be reached: ", 1)[1]
        return f"was not fetched: {reason}"
    if isinstance(exc, DNSLookupError):
        return f"could not be reached: DNS lookup failed for {request.url.split('/')[2]}"
    if isinstance(exc, (TwistedTimeout, TCPTimedOutError)) or "timeout" in type(exc).__name__.lower() or "took longer" in str(exc):
        return f"timed out{tries}"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "maxsize" in text.lower() or "max size" in text.lower() or "Cancelling download" in text:
        return f"was larger than the {request.meta.get('download_maxsize', 'configured')} byte limit: {text[:160]}"
    if "refused" in text.lower():
        return f"could not be reached: connection refused{tries}"
    return f"failed{tries}: {type(exc).__name__}: {text[:200]}"
