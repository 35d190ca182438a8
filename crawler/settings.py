# Scrapy settings for postwatch's crawler. postwatch passes per-run overrides (User-Agent with the
# operator's contact URL, delays, timeouts) from its TOML config; these are the defaults.
BOT_NAME = "postwatch"
SPIDER_MODULES = ["crawler.spiders"]
NEWSPIDER_MODULE = "crawler.spiders"

USER_AGENT = "postwatch/0.1 (+https://github.com/postwatch/postwatch)"

# robots.txt is obeyed by crawler.middlewares.RobotsTxtGateMiddleware for EVERY request: Scrapy's
# own middleware (2.14-2.19) lets requests scheduled before robots.txt arrives slip through.
ROBOTSTXT_OBEY = False
POSTWATCH_OBEY_ROBOTS = True
ROBOTS_TTL = 24 * 3600            # cached robots.txt (kept in the state database) is trusted this long
POSTWATCH_ROBOTS_CACHE = {}       # origin -> crawler.plan.CachedRobotsTxt, handed in per crawl by crawler.run

# Politeness: few parallel requests per host, a delay, AutoThrottle on top. Delay, jitter and
# per-host concurrency also rule crawler.gate, the process's one gate per host, which every crawl
# and the lean revalidation client pass (crawler.middlewares.HostGateMiddleware).
CONCURRENT_REQUESTS = 16
CONCURRENT_REQUESTS_PER_DOMAIN = 2
DOWNLOAD_DELAY = 1.0
DOWNLOAD_DELAY_JITTER = 0.5
AUTOTHROTTLE_ENABLED = True
AUTOTHROTTLE_START_DELAY = 1.0
AUTOTHROTTLE_MAX_DELAY = 30.0
AUTOTHROTTLE_TARGET_CONCURRENCY = 1.0

# Retries with exponential backoff; 429/503 wait for Retry-After (capped).
RETRY_ENABLED = True
RETRY_TIMES = 2
RETRY_HTTP_CODES = [500, 502, 503, 504, 522, 524, 408, 429]
RETRY_BACKOFF_BASE = 1.0
RETRY_BACKOFF_MAX = 30.0
RETRY_AFTER_MAX = 300.0
RETRY_GIVE_UP_LOG_LEVEL = "DEBUG"   # the check's own one-line error says it

DOWNLOAD_TIMEOUT = 30
DOWNLOAD_MAXSIZE = 5 * 1024 * 1024
DOWNLOAD_WARNSIZE = 2 * 1024 * 1024
COMPRESSION_ENABLED = True
REDIRECT_MAX_TIMES = 5
COOKIES_ENABLED = False
HTTPCACHE_ENABLED = False          # validators live in the state database instead
LOG_LEVEL = "WARNING"
TWISTED_REACTOR = "twisted.internet.asyncioreactor.AsyncioSelectorReactor"

# Public addresses only (crawler/addresses.py): a watched site's feed entries and redirects must
# not make postwatch fetch internal pages. The source's own origin may be non-public (each
# request carries its source's URL in request.meta["source_url"]).
POSTWATCH_PUBLIC_ONLY = True
TWISTED_DNS_RESOLVER = "crawler.addresses.PublicAddressResolver"

# At most this many post pages per check (a sweep of known posts aside): a listing that suddenly
# links 10,000 posts is reported from its lines and held by the flood guard, not fetched for hours.
MAX_POST_PAGES = 50
# At most this many known posts missing from the listing's or feed's window get their page asked
# in one check (a reordered listing must not turn into a sweep).
MISSING_PAGES = 10
# Known posts' pages one check reads by the revisit schedule and because their feed entry changed,
# at most ([crawl] revisits_per_check); the schedule's come first.
REVISITS_PER_CHECK = 20

# Scrapy's component lists, as allowlists: only what postwatch uses is loaded, so a component a
# new Scrapy release enables by default (2.19's RemoteControl: an HTTP endpoint on 127.0.0.1 that
# runs Python code, a token file under ~/.local/state/scrapy, aiohttp imported for every crawl)
# never starts here. Disabling one by its setting would still import it; leaving it out does not.
# Left out: the telnet console, cookies (tldextract; COOKIES_ENABLED is off), HTTP auth,
# offsite (sources are followed by crawler.addresses and the spider's own rules), robots.txt
# and retry (replaced below), the HTTP cache (validators live in the state database), the
# downloader's stats (crawler.middlewares.ExchangeCounterMiddleware counts per source), memory
# usage/debugging, log stats, spider state (no JOBDIR), depth and meta-copy checks.
EXTENSIONS_BASE = {
    "scrapy.extensions.corestats.CoreStats": 0,            # finish_reason, which crawler.run acts on
    "scrapy.extensions.logcount.LogCount": 0,
    "scrapy.extensions.closespider.CloseSpider": 0,
    "scrapy.extensions.feedexport.FeedExporter": 0,        # `scrapy crawl blog -O posts.jsonl` only
    "scrapy.extensions.throttle.AutoThrottle": 0,
}
DOWNLOADER_MIDDLEWARES_BASE = {
    "scrapy.downloadermiddlewares.downloadtimeout.DownloadTimeoutMiddleware": 350,
    "scrapy.downloadermiddlewares.defaultheaders.DefaultHeadersMiddleware": 400,
    "scrapy.downloadermiddlewares.useragent.UserAgentMiddleware": 500,
    "scrapy.downloadermiddlewares.redirect.MetaRefreshMiddleware": 580,
    "scrapy.downloadermiddlewares.httpcompression.HttpCompressionMiddleware": 590,
    "scrapy.downloadermiddlewares.redirect.RedirectMiddleware": 600,
    # http_proxy / https_proxy from the environment, for machines that reach the web through one.
    "scrapy.downloadermiddlewares.httpproxy.HttpProxyMiddleware": 750,
}
SPIDER_MIDDLEWARES_BASE = {
    "scrapy.spidermiddlewares.start.StartSpiderMiddleware": 25,
    "scrapy.spidermiddlewares.httperror.HttpErrorMiddleware": 50,
    "scrapy.spidermiddlewares.referer.RefererMiddleware": 700,   # the redirect middlewares hand it the Referer
    "scrapy.spidermiddlewares.urllength.UrlLengthMiddleware": 800,
}
# Watched sites are fetched over http(s) only: no file://, s3://, ftp:// or data: from a feed.
DOWNLOAD_HANDLERS_BASE = {
    "http": "scrapy.core.downloader.handlers.http11.HTTP11DownloadHandler",
    "https": "scrapy.core.downloader.handlers.http11.HTTP11DownloadHandler",
}

DOWNLOADER_MIDDLEWARES = {
    "crawler.addresses.PublicAddressMiddleware": 50,
    "crawler.middlewares.RobotsTxtGateMiddleware": 100,
    "crawler.middlewares.PoliteRetryMiddleware": 550,
    "crawler.middlewares.ConditionalRequestMiddleware": 580,
    "crawler.middlewares.ExchangeCounterMiddleware": 950,
    "crawler.middlewares.PrefetchedResponseMiddleware": 980,
    "crawler.middlewares.HostGateMiddleware": 990,
}
