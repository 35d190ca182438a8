"""What guards the console, as plain objects: password hashes, session ids, the trusted proxy
header (the sign-in throttle below counts in the database: state/operators.py).

- Passwords: Argon2id (argon2-cffi's PasswordHasher, RFC 9106's low-memory profile); a hash made
  under older parameters is replaced at the next sign-in.
- Sessions: a random 256-bit id in the cookie; the database keeps its sha256 only, so a copy of
  the database signs nobody in. A new id at every sign-in (no fixation); idle and absolute expiry.
- CSRF: a random token per session, in a hidden field of every form, compared in constant time
  on every POST (the cookie is also SameSite=Strict).
- Throttling: failed sign-ins counted per account and per client address in a sliding window,
  in the database (state/operators.py: a restart forgives none); at the limit, sign-ins are
  refused (without checking the password) until the window has passed.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets

SESSION_COOKIE = "pw_console"
LOGIN_NONCE_COOKIE = "pw_console_login"
MAX_PASSWORD_BYTES = 4096
MIN_PASSWORD_LENGTH = 10


def hasher():
    from argon2 import PasswordHasher

    return PasswordHasher()      # Argon2id; argon2-cffi's defaults follow RFC 9106


def hash_password(password: str) -> str:
    return hasher().hash(password)


def verify_password(password_hash: str, password: str) -> tuple[bool, bool]:
    """(matches, needs_rehash)."""
    from argon2.exceptions import InvalidHashError, VerificationError

    ph = hasher()
    try:
        ph.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False, False
    return True, ph.check_needs_rehash(password_hash)


# A hash to verify against when the account does not exist: the answer takes as long as for a
# wrong password, so timing does not tell which names are operators.
_DUMMY_HASH: str | None = None


def burn_time(password: str) -> None:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
    verify_password(_DUMMY_HASH, password)


def password_problem(password: str) -> str | None:
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"the password must have at least {MIN_PASSWORD_LENGTH} characters"
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        return f"the password must be at most {MAX_PASSWORD_BYTES} bytes"
    return None


def new_session_id() -> str:
    return secrets.token_urlsafe(32)          # 256 bits


def session_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def new_csrf_token() -> str:
    return secrets.token_urlsafe(24)


def same(a: str, b: str) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())


class TrustedProxies:
    """The addresses allowed to name the operator in `[console] trusted_user_header`."""

    def __init__(self, cidrs: list[str]):
        self.networks = [ipaddress.ip_network(c, strict=False) for c in cidrs]

    def __contains__(self, address: str | None) -> bool:
        if not address or not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)
