"""DKIM signatures (RFC 6376: rsa-sha256, relaxed/relaxed) on the mail postwatch sends.

dkimpy does the DKIM part: header selection, relaxed canonicalisation, the tag list and its
folding, and every verification (`config check`, the tests). Its RSA is pure Python, 14 ms a
signature on this project's 2-core machine; the one RSA operation per message is done by
`cryptography` (OpenSSL) instead, about 0.7 ms, with the same PKCS#1 v1.5 result.
"""
from __future__ import annotations

import base64
import hashlib
import os
import stat
import time
from pathlib import Path

import dkim
import idna
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from dkim.canonicalization import CanonicalizationPolicy, correct_empty_body, strip_trailing_lines

# RFC 8058 one-click unsubscribe counts only when List-Unsubscribe and List-Unsubscribe-Post are
# signed; From is signed twice so that a second From added on the way breaks the signature.
SIGNED_HEADERS = (b"from", b"from", b"to", b"subject", b"date", b"message-id", b"reply-to", b"list-id",
                  b"list-unsubscribe", b"list-unsubscribe-post", b"mime-version", b"content-type")
RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
MIN_KEY_BITS = 1024          # RFC 8301: verifiers refuse less
KEY_BITS = 2048
_NAME = b"DKIM-Signature"


class DkimProblem(ValueError):
    """A DKIM key or setting that cannot be used; str() is one line naming the file."""


def _ascii_domain(domain: str) -> str:
    domain = domain.strip().rstrip(".").lower()
    return domain if domain.isascii() else idna.encode(domain, uts46=True).decode("ascii")


class DkimSigner:
    """Signs messages for `domain` with the key published at `selector._domainkey.domain`."""

    def __init__(self, domain: str, selector: str, private_key: rsa.RSAPrivateKey, key_file: Path | None = None):
        self.domain, self.selector, self.key_file = _ascii_domain(domain), selector.strip(), key_file
        self._key = private_key
        self._public = private_key.public_key()

    @classmethod
    def from_file(cls, path: str | os.PathLike, domain: str, selector: str) -> "DkimSigner":
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DkimProblem(f"{path}: cannot read the DKIM key: {exc.strerror or exc}") from None
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise DkimProblem(f"{path}: not an unencrypted PEM private key ({' '.join(str(exc).split())[:120]}); "
                              f"make one with: postwatch dkim keygen") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise DkimProblem(f"{path}: the DKIM key must be RSA (Gmail and Yahoo verify rsa-sha256 only)")
        if key.key_size < MIN_KEY_BITS:
            raise DkimProblem(f"{path}: a {key.key_size}-bit RSA key is refused by verifiers (RFC 8301); use {KEY_BITS} bits")
        return cls(domain, selector, key, path)

    # -- what DNS must publish -----------------------------------------------------------
    @property
    def dns_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    def dns_record(self) -> str:
        """The TXT record's text: v=DKIM1; k=rsa; p=<the public key, base64 DER>."""
        der = self._public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode('ascii')}"

    def zone_line(self) -> str:
        """The record as a zone file line; the text in strings of at most 255 characters (RFC 1035)."""
        text = self.dns_record()
        chunks = " ".join(f'"{text[i:i + 255]}"' for i in range(0, len(text), 255))
        return f"{self.dns_name}. IN TXT ( {chunks} )"

    # -- signing and checking ------------------------------------------------------------
    def sign(self, message: bytes, now: float | None = None) -> bytes:
        """The message with a DKIM-Signature header in front (CRLF line ends, as composed)."""
        head, separator, body = message.partition(b"\r\n\r\n")
        headers, _ = dkim.rfc822_parse(head + b"\r\n\r\n")
        body_hash = base64.b64encode(hashlib.sha256(_relaxed_body(body if separator else b"")).digest())
        present = {name.lower() for name, _ in headers}
        signed = tuple(h for h in SIGNED_HEADERS if h in present or h == b"from")
        fields = [(b"v", b"1"), (b"a", b"rsa-sha256"), (b"c", b"relaxed/relaxed"), (b"d", self.domain.encode()),
                  (b"s", self.selector.encode()), (b"t", str(int(now if now is not None else time.time())).encode()),
                  (b"h", b" : ".join(signed)), (b"bh", body_hash),
                  # As dkimpy does: a placeholder too long for any folded line puts b= on lines of
                  # its own, so folding the real value later changes nothing before it.
                  (b"b", b"0" * 60)]
        unsigned = dkim.fold(b"; ".join(b"=".join(f) for f in fields), namelen=len(_NAME))
        hasher = hashlib.sha256()
        dkim.hash_headers(hasher, RELAXED, RELAXED.canonicalize_headers(headers), signed,
                          (_NAME, b" " + dkim.RE_BTAG.sub(b"\\1", unsigned)), dict(fields))
        signature = self._key.sign(hasher.digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        fields[-1] = (b"b", base64.b64encode(signature))
        value = dkim.fold(b"; ".join(b"=".join(f) for f in fields), namelen=len(_NAME))
        return _NAME + b": " + value + b"\r\n" + message

    def verifies(self, message: bytes) -> bool:
        """Whether dkimpy accepts the message's signature against this key's public half, as a
        receiving server would after looking up the selector's TXT record."""
        record = self.dns_record().encode()

        def lookup(name, timeout=5):
            return record if name.rstrip(b".").lower() == self.dns_name.encode() else None

        return dkim.verify(message, dnsfunc=lookup)

    def aligned_with(self, from_domain: str) -> bool:
        """DMARC's relaxed alignment: the From domain is the signing domain or below it."""
        domain = _ascii_domain(from_domain)
        return domain == self.domain or domain.endswith("." + self.domain)


def _relaxed_body(body: bytes) -> bytes:
    """Relaxed body canonicalisation (dkimpy's). A composed digest's body is base64 lines and MIME
    headers with no trailing or repeated blanks, for which it only trims trailing empty lines;
    the regular expressions (1 ms for 80 KB) run only when there is whitespace to fold."""
    if b" \r\n" in body or b"\t" in body or b"  " in body or body.endswith(b" "):
        return RELAXED.canonicalize_body(body)
    return correct_empty_body(strip_trailing_lines(body))


def generate_key(path: str | os.PathLike, bits: int = KEY_BITS) -> rsa.RSAPrivateKey:
    """A new RSA key written to `path` (PKCS#8 PEM, mode 0600). An existing file is never
    overwritten: the published DNS record belongs to it."""
    path = Path(path)
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise DkimProblem(f"{path}: already exists; its public half may be in DNS: move it away first") from None
    except OSError as exc:
        raise DkimProblem(f"{path}: cannot create the DKIM key: {exc.strerror or exc}") from None
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    return key


def key_file_problem(path: Path) -> str | None:
    """A key that others can read is a key others can sign with."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None          # from_file says why it cannot be read
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"{path}: the DKIM key is readable by others (mode {stat.S_IMODE(mode):04o}): chmod 600 {path}"
    return None
