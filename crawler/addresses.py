"""Public addresses only: a watched site must not make postwatch fetch internal pages.

A feed entry, a listing link or a redirect can point anywhere, and whatever postwatch fetches
may end up in a digest. So a source's requests go to public addresses only (`ipaddress`'s
`is_global`, IPv4 and IPv6, an IPv4-mapped IPv6 address judged as its IPv4 address). The one
exception: a source whose own URL is on a non-public address (a replica on 127.0.0.1, a blog on
the intranet) may be fetched there, but only on that same origin (scheme, host, port).

Two parts, because checking a name and then connecting to whatever the name resolves to a
moment later lets DNS rebinding through:

- `PublicAddressMiddleware` (downloader middleware, before robots.txt) sees every request: the
  spider's, every redirect (RedirectMiddleware hands the new request back through the chain)
  and every robots.txt request. It resolves the host with `getaddrinfo` in a thread (never on
  the loop), applies `refusal()` to every address and refuses the request with a one-line
  reason naming the URL. The addresses it approved are *pinned* for the connection.
- `PublicAddressResolver` is the reactor's name resolver, which is what Twisted's
  `HostnameEndpoint` (Scrapy's HTTP/1.1 handler) asks when it connects. It answers a pinned name
  with the pinned, approved addresses; any other name is resolved and stripped of every
  non-public answer. So the address actually connected to is always one the policy approved.
  IP literals pass unchanged: they cannot rebind, and the middleware has judged them.

Scrapy's `AsyncCrawlerRunner` installs no `TWISTED_DNS_RESOLVER`, so the middleware installs the
resolver on the reactor itself (once, wrapping the resolver that was there); `scrapy crawl`
(CrawlerProcess) installs it from the `TWISTED_DNS_RESOLVER` setting.

Whether the source's own URL is on a non-public address is decided once per source and crawl,
from the first resolution of its host: a public blog whose name starts resolving to 10.0.0.5 in the
middle of a check is refused. A name that resolves privately from the start of a check (an
intranet blog) cannot be told apart from an operator's intent; its requests stay on its origin.
"""
from __future__ import annotations

import asyncio
import socket
import time

from scrapy.exceptions import IgnoreRequest
from scrapy.utils.httpobj import urlparse_cached
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import IHostnameResolver, IResolutionReceiver
from zope.interface import implementer, provider

from crawler.address_policy import DEFAULT_PORTS, address_kind, is_ip_literal, origin, refusal

# An approved answer is used for connecting for this long; each approval refreshes it. It only
# has to outlive the wait of a request in the downloader (delays, AutoThrottle).
PIN_SECONDS = 15 * 60


class AddressNotAllowed(IgnoreRequest):
    """The request would reach a non-public address outside the source's own origin."""


# -- the connecting side ------------------------------------------------------------------
_pins: dict[str, tuple[float, list[str]]] = {}


def pin(host: str, addresses: list[str]) -> None:
    """Let the resolver answer `host` with these (approved) addresses for the next connections."""
    _pins[host.lower().rstrip(".")] = (time.monotonic() + PIN_SECONDS, list(addresses))


def _pinned(host: str) -> list[str] | None:
    entry = _pins.get(host.lower().rstrip("."))
    if entry is None:
        return None
    if entry[0] < time.monotonic():
        _pins.pop(host.lower().rstrip("."), None)
        return None
    return entry[1]


class _Resolution:
    def __init__(self, name: str):
        self.name = name

    def cancel(self) -> None:
        pass


@provider(IResolutionReceiver)
class _PublicOnlyReceiver:
    """Passes on only the public answers of a name nobody approved."""

    def __init__(self, receiver):
        self.receiver = receiver

    def resolutionBegan(self, resolution) -> None:  # noqa: N802 - Twisted interface
        self.receiver.resolutionBegan(resolution)

    def addressResolved(self, address) -> None:  # noqa: N802
        if address_kind(address.host) is None:
            self.receiver.addressResolved(address)

    def resolutionComplete(self) -> None:  # noqa: N802
        self.receiver.resolutionComplete()


@implementer(IHostnameResolver)
class PublicAddressResolver:
    """The reactor's name resolver while postwatch crawls: pinned answers, else public ones."""

    def __init__(self, reactor, original=None):
        self.reactor = reactor
        self.original = original if original is not None else reactor.nameResolver

    @classmethod
    def from_crawler(cls, crawler, reactor):
        return cls(reactor)

    def install_on_reactor(self) -> None:
        self.reactor.installNameResolver(self)

    def resolveHostName(self, resolutionReceiver, hostName, portNumber=0, addressTypes=None,  # noqa: N802,N803
                        transportSemantics="TCP"):  # noqa: N803
        if is_ip_literal(hostName):
            return self.original.resolveHostName(resolutionReceiver, hostName, portNumber, addressTypes,
                                                 transportSemantics)
        addresses = _pinned(hostName)
        if addresses is None:
            return self.original.resolveHostName(_PublicOnlyReceiver(resolutionReceiver), hostName, portNumber,
                                                 addressTypes, transportSemantics)
        resolution = _Resolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)
        for address in addresses:
            kind = IPv6Address if ":" in address else IPv4Address
            if addressTypes is None or kind in addressTypes:
                resolutionReceiver.addressResolved(kind("TCP", address, portNumber))
        resolutionReceiver.resolutionComplete()
        return resolution


def install_resolver() -> None:
    """Make the reactor connect only to approved or public addresses (once per process)."""
    from twisted.internet import reactor   # the installed one: importing it at the top would install the default

    if not isinstance(reactor.nameResolver, PublicAddressResolver):
        PublicAddressResolver(reactor).install_on_reactor()


# -- the deciding side --------------------------------------------------------------------
async def resolve(host: str, port: int | None) -> list[str]:
    """Every address of `host`, looked up by getaddrinfo in a thread (never blocks the loop)."""
    if is_ip_literal(host):
        return [host.split("%", 1)[0]]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise DNSLookupError(f"{host}: {exc}") from None
    found: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        if sockaddr[0] not in found:
            found.append(sockaddr[0])
    return found


class PublicAddressMiddleware:
    """Refuses every request that would reach a non-public address outside its source's origin.

    Setting: `POSTWATCH_PUBLIC_ONLY` (default True). The source's URL comes with each request
    (`request.meta["source_url"]`, set by the spider and copied onto redirects and robots.txt
    requests); a request without one gets no exception for a private origin."""

    def __init__(self, crawler):
        self.crawler = crawler
        self.enabled = crawler.settings.getbool("POSTWATCH_PUBLIC_ONLY", True)
        self._private_origins: dict[str, asyncio.Future] = {}
        if self.enabled:
            install_resolver()

    @classmethod
    def from_crawler(cls, crawler):
        return cls(crawler)

    async def _private_source_origin(self, source_url: str | None) -> str | None:
        """The source's URL if it is on a non-public address, decided once per source and crawl."""
        if not source_url:
            return None
        decision = self._private_origins.get(source_url)
        if decision is None:
            self._private_origins[source_url] = decision = asyncio.get_running_loop().create_future()
            decided = None
            try:
                _, host, port = origin(source_url)
                try:
                    addresses = await resolve(host, port)
                except DNSLookupError:
                    addresses = []
                if any(address_kind(address) for address in addresses):
                    decided = source_url
            finally:   # a cancelled first request must not leave the others waiting
                decision.set_result(decided)
        return await asyncio.shield(decision)

    async def process_request(self, request):
        if not self.enabled:
            return None
        parsed = urlparse_cached(request)
        scheme, host, port = origin(request.url)
        private_origin = await self._private_source_origin(request.meta.get("source_url"))
        if scheme not in DEFAULT_PORTS or not host:
            addresses = []
        else:
            addresses = await resolve(host, port)
        reason = refusal(request.url, addresses, private_origin)
        if reason:
            self.crawler.stats.inc_value("postwatch/address_refused")
            raise AddressNotAllowed(reason)
        if parsed.hostname and not is_ip_literal(host):
            pin(host, addresses)
        return None
