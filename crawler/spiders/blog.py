"""The one spider: reads blogs' feeds and/or listing pages incrementally and their post pages
only when needed."""
from __future__ import annotations

from datetime import datetime, timezone

from scrapy import Request, Spider
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Response, TextResponse
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.internet.error import DNSLookupError, TCPTimedOutError, TimeoutError as TwistedTimeout

from crawler.extract import discover_feeds, html_to_summary, selector_for
from crawler.feeds import entry_fingerprint, parse_feed
from crawler.items import PostItem
from crawler.kinds import SourceKind, UnknownSourceKind
from crawler.plan import (CrawlPlan, CrawlReport, FeedFailure, SourceSpec, feed_entry_key, feed_failed_key, feed_resting,
                          listing_entry_key, listing_lead_key, sitemap_entry_key, sitemap_of)
from crawler.sitemaps import UnreadableSitemap, parse_sitemap
from crawler.urls import LINK_BLOG_URL, canonicalize

POST_STATUSES = [304, 404, 410]


class SourceCrawl:
    """One source's part of a crawl: its plan, the kind that reads its pages, its report, and
    what has been asked of its site so far."""

    def __init__(self, plan: CrawlPlan, report: CrawlReport, kind: SourceKind):
        self.plan, self.report, self.kind = plan, report, kind
        self.source: SourceSpec = plan.source
        self.site = plan.source.url
        self.requested_posts: set[str] = set()
        self.complete_in_feed: set[str] = set()
        self.listing_pages = 0
        self.post_pages = 0
        self.posts_not_fetched: set[str] = set()
        self.known_pages_asked = False
        # Known posts whose feed entry (or listing entry's title) changed, whose page this check
        # reads: the entry's key among the validators and its new fingerprint, kept once the page
        # answered (a failed read asks again at the next check).
        self.changed_entries: dict[str, dict[str, str]] = {}
        self.changed_reads = 0          # pages asked for changed entries, within REVISITS_PER_CHECK
        self.sitemap_asked = False
        self.started = datetime.now(timezone.utc)

    def meta(self, url: str, *, conditional: bool = True, **meta) -> dict:
        """The meta of a request for `url`: its source, so that middlewares, signals and the
        report collector tell sources apart in a crawl that carries several, and for a
        conditional GET the validators kept for `url`; the first request of a URL whose answer
        the lean revalidation already holds carries it (crawler.middlewares.PrefetchedResponseMiddleware)."""
        validators = {"validators": self.plan.validators.get(url)} if conditional else {}
        prefetched = self.plan.prefetched.pop(url, None)
        if prefetched is not None:
            meta["prefetched"] = prefetched
        return {"source": self.source.name, "source_url": self.source.url, "conditional": conditional,
                **validators, **meta}


class BlogSpider(Spider):
    """Arguments: `plans` (crawler.plan.CrawlPlan, one per source) and `reports` (source name ->
    crawler.plan.CrawlReport), into which it writes what it concludes about each source; posts,
    validators, robots.txt and counts reach the reports through crawler.reports.ReportCollector.

    - Every request is conditional; a 304 on the listing (or feed) ends a normal check.
    - Only posts not yet known get their page fetched; pagination stops at the first listing
      page that holds no unknown post. The baseline walks every listing page and fetches no post.
    - A full sweep re-requests the known post pages conditionally: 304 unchanged, 404/410 gone.
    - Posts in `plan.recheck_urls` are re-read without validators (an edit seen once is
      confirmed only by a fetch that sees the same content); `plan.recheck_feed` does the same
      for the feed (and the listing that leads to it).
    - The source's kind (crawler.kinds) reads its listing and post pages.
    """

    name = "blog"

    def __init__(self, plans: list[CrawlPlan] | None = None, reports: dict[str, CrawlReport] | None = None, **kwargs):
        if plans is None:
            # From the command line, like any Scrapy spider:
            #   scrapy crawl blog -a url=https://libertyinnorthkorea.org/blog -a kind=webflow -O posts.jsonl
            source = SourceSpec(name=kwargs.pop("source", "blog"), url=kwargs.pop("url", LINK_BLOG_URL),
                                kind=kwargs.pop("kind", "auto"), feed_url=kwargs.pop("feed_url", None))
            plans = [CrawlPlan(source=source,
                               baseline=kwargs.pop("baseline", "yes").lower() not in ("0", "no", "false"))]
        super().__init__(**kwargs)
        reports = reports if reports is not None else {}
        self.sources: dict[str, SourceCrawl] = {}
        for plan in plans:
            report = reports.setdefault(plan.source.name, CrawlReport(source_name=plan.source.name, baseline=plan.baseline))
            try:
                kind = SourceKind.named(plan.source.kind)(plan.source.selectors)
            except UnknownSourceKind as exc:
                report.fail(f"{plan.source.name}: {exc}")
                continue
            self.sources[plan.source.name] = SourceCrawl(plan, report, kind)

    def _crawl_of(self, request_or_response: Request | Response) -> SourceCrawl:
        return self.sources[request_or_response.meta["source"]]

    async def start(self):
        for crawl in self.sources.values():
            for request in self._start_requests(crawl):
                yield request

    def _start_requests(self, crawl: SourceCrawl):
        source = crawl.source
        if source.feed_url and not crawl.kind.feed_only and self._feed_rests(crawl, source.feed_url):
            yield self._listing_request(crawl, source.url, first=True)
        elif source.feed_url:
            # The listing is read after the feed, so posts the feed carried in full need no page.
            yield self._feed_request(crawl, source.feed_url)
        else:
            yield self._listing_request(crawl, source.url, first=True)

    def _sitemap(self, crawl: SourceCrawl):
        """The source's sitemap (crawler.plan.sitemap_of), once a check, after the posts of its
        listing or feed are known: a new post's <lastmod> is recorded at its first check."""
        sitemap = None if crawl.sitemap_asked else sitemap_of(crawl.plan)
        crawl.sitemap_asked = True
        if sitemap:
            yield self._sitemap_request(crawl, sitemap)

    def _known_pages(self, crawl: SourceCrawl):
        """The known posts' pages this check looks at, once the source's first answer came: a
        source whose listing or feed fails costs no more requests (a failing 43-post source
        made 132 requests in a full sweep before)."""
        if crawl.known_pages_asked:
            return
        crawl.known_pages_asked = True
        for url in crawl.plan.recheck_urls:
            request = self._post_request(crawl, url, sweep=True, conditional=False)
            if request:
                yield request
        for url in crawl.plan.sweep_urls:
            request = self._post_request(crawl, url, sweep=True)
            if request:
                yield request

    def _feed_rests(self, crawl: SourceCrawl, url: str) -> bool:
        """Whether this check skips the feed at `url` (a kind that reads its listing too): it failed
        at an earlier check and its backoff has not passed (crawler.plan.feed_resting). Still one
        warning per check, and the problem stays the report's (the operator's daily alert)."""
        failure = feed_resting(crawl.plan.validators, url, crawl.started)
        if failure is None:
            return False
        crawl.report.feed_problem = failure.problem
        crawl.report.warnings.append(
            f"{crawl.source.name}: {failure.problem} (at {failure.at:%Y-%m-%d %H:%M} UTC, {failure.failures} "
            f"checks in a row); the listing's posts are read without it, the feed is asked again "
            f"after {failure.retry_at:%Y-%m-%d %H:%M} UTC")
        return True

    def _feed_answered(self, crawl: SourceCrawl, url: str) -> None:
        """A feed that answers (200 with a feed, or 304) clears its kept failure."""
        if FeedFailure.kept(crawl.plan.validators, url) is not None:
            crawl.report.validators[feed_failed_key(url)] = (None, None)

    # -- requests ------------------------------------------------------------------------
    def _feed_request(self, crawl: SourceCrawl, url: str, discovered: bool = False) -> Request:
        return Request(url, callback=self.parse_feed, errback=self.on_listing_error, dont_filter=True,
                       meta=crawl.meta(url, conditional=not crawl.plan.recheck_feed, handle_httpstatus_list=[304],
                                       role="feed", discovered=discovered))

    def _listing_request(self, crawl: SourceCrawl, url: str, first: bool = False) -> Request:
        return Request(url, callback=self.parse_listing, errback=self.on_listing_error, dont_filter=True,
                       meta=crawl.meta(url, conditional=not (first and crawl.plan.recheck_feed),
                                       handle_httpstatus_list=[304], role="listing", first=first))

    def _sitemap_request(self, crawl: SourceCrawl, url: str, child: bool = False) -> Request:
        """The source's sitemap, conditional like every request: its <lastmod>s are a change signal."""
        return Request(url, callback=self.parse_sitemap, errback=self.on_sitemap_error, dont_filter=True,
                       meta=crawl.meta(url, handle_httpstatus_list=[304], role="sitemap", child=child))

    def _post_request(self, crawl: SourceCrawl, url: str, sweep: bool = False, link: str | None = None,
                      conditional: bool = True) -> Request | None:
        if url in crawl.requested_posts:
            return None
        if not sweep:
            # The post is reported from its listing/feed line anyway; beyond the cap its page
            # waits, so that a flood of links is judged by the flood guard before it costs hours.
            if crawl.post_pages >= self.settings.getint("MAX_POST_PAGES", 50):
                crawl.posts_not_fetched.add(url)
                return None
            crawl.post_pages += 1
        crawl.requested_posts.add(url)
        # Fetch the address the site itself links to (a canonical form without the trailing
        # slash would cost a redirect on WordPress); the post's identity stays `url`.
        fetch = link if link and canonicalize(link, site=crawl.site) == url else url
        return Request(fetch, callback=self.parse_post, errback=self.on_post_error, dont_filter=True,
                       meta=crawl.meta(url, conditional=conditional, validator_key=url,
                                       handle_httpstatus_list=POST_STATUSES, post_url=url, sweep=sweep))

    def _missing_from_window(self, crawl: SourceCrawl, shown: set[str], edge):
        """Known posts published after the window's `edge` that the window no longer shows: a
        removal pagination cannot explain, so their own pages are asked (404/410 twice, the
        removal delay apart, removes; a 304 or 200 keeps them), at most MISSING_PAGES a check."""
        if crawl.plan.baseline or edge is None:
            return
        missing = sorted((published, url) for url, published in crawl.plan.known_published.items()
                         if published > edge and url not in shown)
        for _, url in missing[-self.settings.getint("MISSING_PAGES", 10):]:
            request = self._post_request(crawl, url, sweep=True)
            if request:
                yield request

    def _changed_entries(self, crawl: SourceCrawl, result):
        """Edits without a sweep: a known post whose summary-feed entry changed (summary, content,
        title, update time) has its page read in this check, the usual conditional GET of a
        revisit; the edit it shows is then confirmed by the usual second fetch. A full-content
        entry needs no page: its copy in the feed is judged itself."""
        for item in result.entries:
            fingerprint = result.fingerprints.get(item.url)
            if fingerprint and not item.body_html:
                request = self._read_if_changed(crawl, item.url, item.link, feed_entry_key(item.url), fingerprint)
                if request:
                    yield request

    def _read_if_changed(self, crawl: SourceCrawl, url: str, link: str | None, key: str,
                         fingerprint: str) -> Request | None:
        """The page of the known post at `url` when what its feed or listing entry says (kept
        under `key` among the validators) changed since the last check. At most what the revisit
        schedule leaves of REVISITS_PER_CHECK pages; one beyond waits for the next check (its
        entry's old fingerprint is kept). First sight of an entry, or of a post, only records it."""
        plan, report = crawl.plan, crawl.report
        kept = (plan.validators.get(key) or (None, None))[0]
        if kept == fingerprint:
            return None
        if kept is None or plan.baseline or url not in plan.known_urls:
            report.validators[key] = (fingerprint, None)        # first sight: nothing to compare
            return None
        if url in crawl.requested_posts:                        # read in this check already
            crawl.changed_entries.setdefault(url, {})[key] = fingerprint
            return None
        if crawl.changed_reads >= self.settings.getint("REVISITS_PER_CHECK", 20) - len(plan.sweep_urls):
            return None
        request = self._post_request(crawl, url, sweep=True, link=link)
        if request:
            crawl.changed_reads += 1
            crawl.changed_entries.setdefault(url, {})[key] = fingerprint
        return request

    def closed(self, reason):
        cap = self.settings.getint("MAX_POST_PAGES", 50)
        for crawl in self.sources.values():
            if crawl.posts_not_fetched:
                crawl.report.warnings.append(
                    f"{crawl.source.name}: {len(crawl.posts_not_fetched)} new posts beyond max_post_pages = "
                    f"{cap} were taken from the listing/feed without fetching their pages in this check")

    # -- feed ----------------------------------------------------------------------------
    def parse_feed(self, response):
        crawl = self._crawl_of(response)
        source, plan, report = crawl.source, crawl.plan, crawl.report
        # The listing after the feed: not for a kind whose feed is the source, nor after a feed the
        # listing has just advertised, nor while an "auto" source's remembered feed is read alone.
        reads_listing = not (crawl.kind.feed_only or response.meta.get("discovered") or plan.feed_alone)
        if response.status == 304:
            self._feed_answered(crawl, _asked(response.request))
            if reads_listing:
                yield self._listing_request(crawl, source.url, first=True)   # the listing decides
            else:
                report.not_modified = True
                yield from self._known_pages(crawl)
                yield from self._sitemap(crawl)
            return
        result = parse_feed(response.body, response.url, _headers(response), site=crawl.site)
        if result.error:
            if crawl.kind.feed_only:
                report.fail(f"{source.name}: {result.error}")
            else:
                yield from self._without_feed(crawl, response.request, result.error)
            return
        self._feed_answered(crawl, _asked(response.request))
        if not reads_listing:
            yield from self._known_pages(crawl)
        if result.warning:
            report.warnings.append(f"{source.name}: {result.warning}")
        crawl.complete_in_feed = {item.url for item in result.entries if item.body_html}
        yield from self._missing_from_window(crawl, {item.url for item in result.entries}, _edge(result.entries))
        yield from self._changed_entries(crawl, result)
        if reads_listing:
            yield self._listing_request(crawl, source.url, first=True)
        for item in result.entries:
            yield item
            if not (item.body_html or plan.baseline or item.url in plan.known_urls):
                # A summary-only feed: the page has the body, but only for posts not seen before.
                request = self._post_request(crawl, item.url, link=item.link)
                if request:
                    yield request
        if not reads_listing:
            yield from self._sitemap(crawl)

    # -- listing -------------------------------------------------------------------------
    def parse_listing(self, response):
        crawl = self._crawl_of(response)
        source, plan, report = crawl.source, crawl.plan, crawl.report
        first = response.meta.get("first")
        if first:
            report.listing_read = True
        if response.status == 304:
            if first:
                report.not_modified = True
                yield from self._known_pages(crawl)
                yield from self._sitemap(crawl)
            return
        crawl.listing_pages += 1
        if not isinstance(response, TextResponse):
            report.fail(f"{source.name}: listing {response.url} is not an HTML page")
            return
        if first:
            yield from self._known_pages(crawl)
        sel = selector_for(response.text, response.url)
        if first and crawl.kind.discovers_feeds and (not source.feed_url or source.feed_discovered):
            # Found again at each read of the listing: a feed that moved is followed.
            feeds = discover_feeds(sel, response.url)
            if feeds and feeds[0] != source.feed_url and not self._feed_rests(crawl, feeds[0]):
                report.discovered_feed = feeds[0]
                yield self._feed_request(crawl, feeds[0], discovered=True)
        entries, next_url = crawl.kind.listing(sel, response.url, crawl.site)
        if first:
            yield from self._missing_from_window(crawl, {entry.url for entry in entries}, _edge(entries))
        for entry in entries:
            known = entry.url in plan.known_urls or entry.url in crawl.complete_in_feed
            yield PostItem(url=entry.url, title=entry.title, published=entry.published, body_html=None,
                           summary=entry.summary, origin="listing")
            if not known and not plan.baseline:
                request = self._post_request(crawl, entry.url, link=entry.link)
                if request:
                    yield request
            if entry.url not in crawl.complete_in_feed:
                yield from self._changed_listing_entry(crawl, entry)
        if first:
            yield from self._sitemap(crawl)
        # Listings are newest first: once the page ends on a known post, older pages hold only
        # known posts (a pinned post at the top does not end the walk early).
        ends_unknown = bool(entries) and entries[-1].url not in plan.known_urls
        more_pages = crawl.listing_pages < self.settings.getint("MAX_LISTING_PAGES", 500)
        if next_url and (plan.baseline or ends_unknown) and more_pages:
            yield self._listing_request(crawl, next_url)
        elif plan.baseline and not next_url:
            report.listing_complete = True

    def _changed_listing_entry(self, crawl: SourceCrawl, entry):
        """A known post retitled on the listing, or whose lead (summary, excerpt) changed there: its
        page is read in this check (a new post's entry: its title and lead are only recorded)."""
        for key, shown in ((listing_entry_key(entry.url), entry.title), (listing_lead_key(entry.url), entry.summary)):
            if shown:
                request = self._read_if_changed(crawl, entry.url, entry.link, key, entry_fingerprint(shown))
                if request:
                    yield request

    # -- sitemap -------------------------------------------------------------------------
    def parse_sitemap(self, response):
        """A known post whose <lastmod> changed has its page read in this check, within what the
        revisit schedule leaves of REVISITS_PER_CHECK; the first sight of a post's <lastmod> is only
        recorded. A sitemap index is followed to a few of its sitemaps (crawler.sitemaps)."""
        crawl = self._crawl_of(response)
        if response.status == 304:
            return
        try:
            sitemap = parse_sitemap(response.body)
        except UnreadableSitemap as exc:
            self.logger.debug("%s: sitemap %s unreadable: %s", crawl.source.name, response.url, exc)
            return
        if not response.meta.get("child"):
            for child in sitemap.children:
                yield self._sitemap_request(crawl, child, child=True)
        for loc, lastmod in sitemap.pages:
            url = canonicalize(loc, site=crawl.site)
            seen = url in crawl.plan.known_urls or url in crawl.requested_posts or url in crawl.report.posts_by_url
            if lastmod and seen:
                request = self._read_if_changed(crawl, url, loc, sitemap_entry_key(url), entry_fingerprint(lastmod))
                if request:
                    yield request

    def on_sitemap_error(self, failure):
        """A sitemap that fails costs nothing but this request: the check goes on without it."""
        request = failure.request
        self.logger.debug("%s: sitemap %s %s", request.meta["source"], request.url, describe_failure(failure, request))

    # -- post pages ----------------------------------------------------------------------
    def parse_post(self, response):
        crawl = self._crawl_of(response)
        report = crawl.report
        url = response.meta["post_url"]
        if url in crawl.changed_entries and response.status in (200, 304):
            for key, fingerprint in crawl.changed_entries.pop(url).items():
                report.validators[key] = (fingerprint, None)
        if response.status == 304:
            report.unchanged_urls.add(url)
            return
        if response.status in (404, 410):
            report.gone[url] = response.status
            return
        if not isinstance(response, TextResponse):
            report.failed[url] = f"{url} is not an HTML page"
            return
        page = crawl.kind.post(selector_for(response.text, response.url), response.url, crawl.site)
        # A known post keeps the identity it was stored under; a new one takes rel=canonical.
        identity = url if response.meta.get("sweep") or url in crawl.plan.known_urls else page.url
        yield PostItem(url=identity, title=page.title, published=page.published, body_html=page.body_html,
                       summary=html_to_summary(page.body_html), origin="page", reader=page.reader)

    # -- errors --------------------------------------------------------------------------
    def on_listing_error(self, failure):
        request = failure.request
        crawl = self._crawl_of(request)
        what = request.meta.get("role", "listing")
        problem = f"{what} {request.url} {describe_failure(failure, request)}"
        if what == "feed" and not crawl.kind.feed_only:
            return list(self._without_feed(crawl, request, problem))
        crawl.report.fail(f"{crawl.source.name}: {problem}")
        return None

    def _without_feed(self, crawl: SourceCrawl, request: Request, problem: str):
        """A kind that reads its listing too (auto, html) degrades when the feed fails (404,
        timeout, not a feed): one warning, and the listing's posts are in force. A feed that
        came first (configured, or discovered by an earlier check) hands over to the listing;
        a feed the listing has just advertised is not recorded as the source's feed."""
        crawl.report.feed_problem = ' '.join(problem.split())
        if not crawl.kind.feed_only:        # asked again after a backoff (crawler.plan.FeedFailure)
            kept = FeedFailure.kept(crawl.plan.validators, _asked(request))
            failure = FeedFailure(crawl.started, (kept.failures if kept else 0) + 1, crawl.report.feed_problem)
            crawl.report.validators[feed_failed_key(_asked(request))] = failure.validators()
        crawl.report.warnings.append(f"{crawl.source.name}: {crawl.report.feed_problem}; "
                                     "the listing's posts are read without it")
        if request.meta.get("discovered"):
            if crawl.report.discovered_feed == request.url:
                crawl.report.discovered_feed = None
            return
        yield self._listing_request(crawl, crawl.source.url, first=True)

    def on_post_error(self, failure):
        request = failure.request
        self._crawl_of(request).report.failed[request.meta["post_url"]] = describe_failure(failure, request)


def _edge(entries):
    """The date where a listing's or feed's window ends: its last dated entry in page order.
    Windows are newest first, so a pinned old post at the top does not move it, a feed whose
    order disagrees with its dates flags only what is newer than its tail, and an oldest-first
    feed flags nothing."""
    return next((entry.published for entry in reversed(entries) if entry.published), None)


def _asked(request: Request) -> str:
    """The URL a request was first made for, before any redirect."""
    return (request.meta.get("redirect_urls") or [request.url])[0]


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
