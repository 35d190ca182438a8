"""A real SMTP server on loopback that keeps what it receives: for `postwatch demo` and the tests."""
from __future__ import annotations

import hashlib
import threading
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller


class _KeepingHandler:
    def __init__(self, catcher: "MailCatcher"):
        self.catcher = catcher

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd hook name
        refusal = self.catcher.refusal_for(envelope)
        if refusal:
            return refusal
        self.catcher.keep(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content or envelope.content)
        return "250 Message accepted for delivery"


class MailCatcher:
    """`with MailCatcher(folder) as smtp:` — smtp.port, smtp.messages (parsed), smtp.files.

    stop() then start() again is a mail server that went down and came back on the same port."""

    handler_class = _KeepingHandler

    def __init__(self, folder: Path | None = None, host: str = "127.0.0.1", port: int = 0, **controller_options):
        self.folder = Path(folder) if folder else None
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.files: list[Path] = []
        # Answers to the next DATA commands, in order: None accepts, "451 4.3.0 try later" refuses.
        self.answers: list[str | None] = []
        self._lock = threading.Lock()
        self._controller_options = {"hostname": host, "port": port or _free_port(host), **controller_options}
        self._controller = Controller(self.handler_class(self), **self._controller_options)
        self._stopped = False

    @property
    def host(self) -> str:
        return self._controller.hostname

    @property
    def port(self) -> int:
        return self._controller.port

    def refusal_for(self, envelope) -> str | None:
        with self._lock:
            return self.answers.pop(0) if self.answers else None

    def keep(self, mail_from: str, rcpt_tos: list[str], raw: bytes) -> None:
        message = message_from_bytes(raw, policy=policy.default)
        with self._lock:
            self.messages.append(message)
            self.envelopes.append((mail_from, rcpt_tos))
            if self.folder:
                self.folder.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256(str(message.get("Message-ID", len(self.files))).encode()).hexdigest()[:12]
                path = self.folder / f"{len(self.files) + 1:03d}-{digest}.eml"
                path.write_bytes(raw)
                self.files.append(path)

    def message_ids(self) -> list[str]:
        with self._lock:
            return [str(m.get("Message-ID")) for m in self.messages]

    def start(self) -> "MailCatcher":
        if self._stopped:   # an aiosmtpd Controller runs once: a restart needs a new one
            self._controller = Controller(self.handler_class(self), **self._controller_options)
            self._stopped = False
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()
        self._stopped = True

    def __enter__(self) -> "MailCatcher":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
