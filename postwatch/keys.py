"""Secrets and keys kept in files: the unsubscribe secret (made once, beside the database) and
the DKIM signing key. Each failure is a ConfigError naming the file."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from postwatch.vocabulary import ConfigError

MIN_SECRET_LENGTH = 16


def read_or_create_secret(secret_file: Path, env_name: str) -> bytes:
    """The secret kept in `secret_file`, made (random) when there is none yet; `env_name` is the
    variable the operator could set instead, named in the error."""
    try:
        secret = secret_file.read_bytes().strip()
    except FileNotFoundError:
        import secrets

        secret = create_secret_file(secret_file, secrets.token_urlsafe(32).encode(), env_name)
    except OSError as exc:
        raise ConfigError([f"{secret_file}: cannot read the unsubscribe secret: {exc.strerror or exc}"]) from None
    if len(secret) < MIN_SECRET_LENGTH:
        what = "is empty" if not secret else f"holds only {len(secret)} characters (at least {MIN_SECRET_LENGTH} needed)"
        raise ConfigError([f"{secret_file}: the unsubscribe secret {what}; delete the file to have a new one made "
                           f"(unsubscribe links in digests already sent stop working) or set ${env_name}"])
    return secret


def create_secret_file(path: Path, secret: bytes, env_name: str) -> bytes:
    """Write the secret under a temporary name, fsync it, then hard-link it into place: the link
    fails if the file exists, so of processes starting at once exactly one creates it, and no
    reader ever sees it empty or half-written (a full disk leaves no file at all)."""
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot create the unsubscribe secret: {exc.strerror or exc}"]) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secret)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return path.read_bytes().strip()       # made by a process that started with us
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return secret
    except OSError as exc:
        raise ConfigError([f"{path}: cannot create the unsubscribe secret: {exc.strerror or exc}; free the space or "
                           f"fix the folder's permissions, or set ${env_name}"]) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def dkim_signer(key_file: Path, domain: str, selector: str):
    """The digest.signing.DkimSigner for the key in `key_file`; ConfigError naming the key file."""
    from digest.signing import DkimProblem, DkimSigner

    try:
        return DkimSigner.from_file(key_file, domain, selector)
    except DkimProblem as exc:
        raise ConfigError([f"[dkim] key_file {exc}"]) from None
