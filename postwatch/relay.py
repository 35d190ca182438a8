"""What a mail relay, and the mailboxes behind it, will refuse: the checks `postwatch config
check` runs when an SMTP relay is configured (public unsubscribe URL, a real From domain, a
plain envelope sender, a DKIM key that signs and verifies and is aligned with From)."""
from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from digest.settings import plain_address, wire_address
from postwatch.config import Config, ConfigError

# RFC 2606 / 6761 names: no relay delivers from them and no DNS publishes their records.
_SPECIAL_USE_TLDS = {"localhost", "local", "localdomain", "invalid", "test", "example", "internal", "lan", "home", "arpa"}


def _unreachable_host(host: str) -> str | None:
    """Why a reader's phone could not reach `host`, or None."""
    host = host.strip("[]").rstrip(".").lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if "." not in host or host.rpartition(".")[2] in _SPECIAL_USE_TLDS:
            return f"'{host}' is not a public host name"
        return None
    if address.is_unspecified:
        return f"{host} is the unspecified address (a listen address, not one a reader can open)"
    if address.is_loopback:
        return f"{host} is a loopback address: only this machine can open it"
    if not address.is_global:
        return f"{host} is a private address: readers outside your network cannot open it"
    return None


def relay_problems(config: Config, where: str = "config") -> list[str]:
    """What a real mail relay, and readers' mail clients, need from the config: checked by
    `config check` when [smtp] host is set (the outbox folder needs none of it)."""
    if not config.smtp.host:
        return []
    problems: list[str] = []
    url = config.unsubscribe_url
    if not config.unsubscribe.public_url:
        problems.append(f"{where}: [unsubscribe] public_url is not set, so unsubscribe links would point at the listen "
                        f"address ({url}); set it to the https:// address where [daemon] listen is reachable")
    elif urlsplit(url).scheme != "https":
        problems.append(f"{where}: [unsubscribe] public_url {url!r} must be https: mail clients make one-click "
                        "unsubscribe requests (RFC 8058) to https URLs only")
    if config.unsubscribe.public_url:
        reason = _unreachable_host(urlsplit(url).hostname or "")
        if reason:
            problems.append(f"{where}: [unsubscribe] public_url {url!r}: {reason}")
    domain = config.from_domain
    reason = _unreachable_host(domain) if domain else "it has no address"
    if reason:
        problems.append(f"{where}: [digest] from {config.digest.from_addr!r}: a relay refuses mail from this domain "
                        f"({reason})")
    sender = wire_address(config.envelope_sender)
    if not config.smtp.envelope_from and reason:
        pass                      # the sender is From's address: its domain is reported above
    elif not plain_address(sender):
        problems.append(f"{where}: the envelope sender {sender!r} is not a plain address (name@example.org); "
                        "set [smtp] envelope_from")
    elif config.smtp.envelope_from and _unreachable_host(sender.rpartition("@")[2]):
        problems.append(f"{where}: [smtp] envelope_from {sender!r}: bounces cannot reach this domain")
    return problems


def dkim_report(config: Config, where: str = "config") -> tuple[str, list[str]]:
    """One line on DKIM for `config check`, and its problems: the key loads and is private, a
    digest signed with it verifies against its public half (offline: the TXT record DNS should
    publish is made from the key), and the signing domain is aligned with From (DMARC)."""
    if not config.dkim.selector or not config.dkim.key_file:
        return "DKIM not signed by postwatch (the relay may sign)", []
    from digest.signing import key_file_problem

    try:
        signer = config.dkim_signer()
    except ConfigError as exc:
        return "", [f"{where}: {line}" for line in exc.problems]
    problems = []
    mode_problem = key_file_problem(signer.key_file)
    if mode_problem:
        problems.append(f"{where}: [dkim] key_file {mode_problem}")
    sample = (f"From: {config.envelope_sender}\r\nTo: reader@example.org\r\nSubject: postwatch config check\r\n"
              "List-Unsubscribe: <https://example.org/u>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
              "\r\nA signed test message.\r\n").encode()
    if not signer.verifies(signer.sign(sample)):
        problems.append(f"{where}: [dkim] a message signed with {signer.key_file} does not verify against its own public key")
    if config.from_domain and not signer.aligned_with(config.from_domain):
        problems.append(f"{where}: [dkim] domain {signer.domain!r} is not the domain of [digest] from ({config.from_domain}) "
                        "or a parent of it: DMARC would not count the signature")
    return f"DKIM {signer.dns_name} (publish: postwatch dkim record)", problems
