"""The address policy of crawler.addresses as plain functions, free of Scrapy and Twisted, so the
lean revalidation client (crawler.revalidate) applies the very same rule: a source's requests go
to public addresses only, except on the source's own origin when that origin is itself non-public.
"""
from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


def address_kind(address: str) -> str | None:
    """None for a public address, else what kind of non-public address it is."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "invalid"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv6Address) and ip in ipaddress.IPv6Network("fc00::/7"):
        return "unique-local"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "non-public"
    return None


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the default port made explicit."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower().rstrip("."), port or DEFAULT_PORTS.get(scheme)


def _origin_text(url: str) -> str:
    scheme, host, port = origin(url)
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + ("" if port == DEFAULT_PORTS.get(scheme) else f":{port}")


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def refusal(url: str, addresses: list[str], private_origin: str | None = None) -> str | None:
    """Why `url`, whose host has `addresses`, may not be fetched (None: it may).

    `private_origin` is the source's URL when that URL is itself on a non-public address: its
    origin, and only its origin, may then be fetched on any address."""
    scheme, host, _ = origin(url)
    if scheme not in DEFAULT_PORTS:
        return f"{url} is not an http(s) URL; postwatch fetches only public http(s) addresses"
    if private_origin is not None and origin(url) == origin(private_origin):
        return None
    if not addresses:
        return f"{url} resolves to no address; postwatch fetches only public addresses"
    for address in addresses:
        kind = address_kind(address)
        if kind:
            where = f"is on {address}" if is_ip_literal(host) else f"resolves to {address}"
            also = f" (and the source's own origin {_origin_text(private_origin)})" if private_origin else ""
            article = "an" if kind[0] in "aeiou" else "a"
            return f"{url} {where}, {article} {kind} address; postwatch fetches only public addresses{also}"
    return None
