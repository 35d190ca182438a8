"""Canonical URLs: one identity per post whatever variant of its address a page links to."""
from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, unquote, urlencode, urljoin, urlsplit, urlunsplit

TRACKING_PARAMS = re.compile(
    r"^(utm_[a-z0-9_]+|fbclid|gclid|dclid|gbraid|wbraid|msclkid|yclid|mc_cid|mc_eid|_ga|_gl|igshid|"
    r"ref_src|ref_url|s_cid|mkt_tok|oly_enc_id|oly_anon_id|vero_id|__s|_hsenc|_hsmi|hsctatracking)$", re.I)
# Webflow paginates the collection lists on a page with ?<8 hex>_page=N; the article is the same.
WEBFLOW_PAGE_PARAM = re.compile(r"^[0-9a-f]{8}_page$", re.I)
DEFAULT_PORTS = {"http": 80, "https": 443}
# The blog postwatch watches when no source is configured (a Webflow site without a feed).
LINK_BLOG_URL = "https://libertyinnorthkorea.org/blog"
_SAFE_PATH = "/:@!$&'()*+,;=-._~%"


def _bare(host: str) -> str:
    return host[4:] if host.startswith("www.") else host


def same_site(url: str, site: str) -> bool:
    a, b = urlsplit(url), urlsplit(site)
    return bool(a.hostname) and _bare(a.hostname.lower()) == _bare((b.hostname or "").lower())


def canonicalize(url: str, base: str | None = None, site: str | None = None, *, keep_pagination: bool = False) -> str:
    """Scheme and `www.` of the source (`site`) for its own links, so that http/https/www
    variants fold and the result stays fetchable (a link on another port of the site's host is
    another origin and keeps its scheme and port); no fragment, default port, trailing slash,
    tracking or Webflow pagination parameter; remaining parameters sorted. Idempotent."""
    url = (url or "").strip()
    if base:
        url = urljoin(base, url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower().rstrip(".")
    try:
        port = parts.port
    except ValueError:
        port = None
    if site:
        site_parts = urlsplit(site)
        site_host = (site_parts.hostname or "").lower()
        site_scheme = site_parts.scheme.lower()
        try:
            site_port = site_parts.port or DEFAULT_PORTS.get(site_scheme)
        except ValueError:
            site_port = DEFAULT_PORTS.get(site_scheme)
        link_port = port or DEFAULT_PORTS.get(scheme)
        # http/https and default-port variants fold; another port is another origin and stays.
        same_origin_port = link_port == site_port or (
            link_port == DEFAULT_PORTS.get(scheme) and site_port == DEFAULT_PORTS.get(site_scheme))
        if host and _bare(host) == _bare(site_host) and same_origin_port:
            scheme, host, port = site_scheme, site_host, site_port
    if port == DEFAULT_PORTS.get(scheme):
        port = None
    netloc = host if port is None else f"{host}:{port}"
    if ":" in host and not host.startswith("["):
        netloc = f"[{host}]" + ("" if port is None else f":{port}")
    path = quote(unquote(parts.path), safe=_SAFE_PATH) or "/"
    path = re.sub(r"/{2,}", "/", path)
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/") or "/"
    params = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
              if not TRACKING_PARAMS.match(k) and (keep_pagination or not WEBFLOW_PAGE_PARAM.match(k))]
    query = urlencode(sorted(params), doseq=True)
    return urlunsplit((scheme, netloc, path, query, ""))


def is_http_url(url: str) -> bool:
    """An http(s) URL with a host name and, if it names one, a valid port."""
    try:
        parts = urlsplit(url)
        parts.port        # raises for a port out of range
    except ValueError:     # e.g. "http://[::1/"
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def advertised_sitemaps(robots_txt: str, base: str) -> list[str]:
    """The sitemaps a robots.txt names (`Sitemap:` lines), absolute against `base`."""
    return [urljoin(base, line.split(":", 1)[1].strip()) for line in robots_txt.splitlines()
            if line.lower().startswith("sitemap:")]
