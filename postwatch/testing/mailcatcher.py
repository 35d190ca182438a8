"""A real SMTP server on loopback that keeps what it receives: for `postwatch demo` and the tests.

For trials that receive tens of thousands of messages it also runs as a process of its own,
writing down one JSON line per message instead of keeping it (`LoggingCatcher`,
`MailCatcherProcess`):

    python -m postwatch.testing.mailcatcher --log received.jsonl [--host 127.0.0.1] [--port N]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import threading
from dataclasses import dataclass
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


_URL = re.compile(r"https?://[^\s<>\"]+")


@dataclass(frozen=True)
class Delivery:
    """What a trial judges of one received message: its Message-ID, its To header and the URLs
    its plain-text body names (the digests put each post's URL on a line of its own)."""
    message_id: str
    to: str
    urls: frozenset[str]

    @classmethod
    def of(cls, message: EmailMessage) -> "Delivery":
        body = message.get_body(preferencelist=("plain",))
        urls = frozenset(_URL.findall(body.get_content())) if body is not None else frozenset()
        return cls(str(message.get("Message-ID")), str(message.get("To", "")), urls)


def deliveries_of(catcher: MailCatcher) -> list[Delivery]:
    with catcher._lock:
        messages = list(catcher.messages)
    return [Delivery.of(message) for message in messages]


class LoggingCatcher(MailCatcher):
    """Keeps nothing in memory: each message becomes one JSON line of its Delivery in `log`,
    written before the server answers 250, so a message the sender was told is accepted is in
    the file. (Kept parsed, 20,000 digests hold the process's memory and, parsed in the process
    of a trial, its cores.)"""

    def __init__(self, log: Path, **options):
        super().__init__(**options)
        self.log = Path(log)
        self._log_file = self.log.open("a", encoding="utf-8")

    def keep(self, mail_from: str, rcpt_tos: list[str], raw: bytes) -> None:
        delivery = Delivery.of(message_from_bytes(raw, policy=policy.default))
        line = json.dumps({"message_id": delivery.message_id, "to": delivery.to, "rcpt": rcpt_tos,
                           "urls": sorted(delivery.urls)})
        with self._lock:
            self._log_file.write(line + "\n")
            self._log_file.flush()

    def stop(self) -> None:
        super().stop()
        self._log_file.flush()


def read_deliveries(log: Path) -> list[Delivery]:
    if not log.exists():
        return []
    deliveries = []
    for line in log.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            deliveries.append(Delivery(record["message_id"], record["to"], frozenset(record["urls"])))
    return deliveries


class MailCatcherProcess:
    """`with MailCatcherProcess(log) as smtp:` — a LoggingCatcher in a process of its own;
    smtp.port, smtp.deliveries(), smtp.message_ids()."""

    def __init__(self, log: Path, host: str = "127.0.0.1"):
        self.log, self.host = Path(log), host
        self.port: int | None = None
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "MailCatcherProcess":
        self.process = subprocess.Popen([sys.executable, "-m", "postwatch.testing.mailcatcher", "--log", str(self.log),
                                         "--host", self.host], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the mail catcher process ended before it listened (exit status {self.process.wait()})")
        self.port = json.loads(line)["port"]
        return self

    def deliveries(self) -> list[Delivery]:
        return read_deliveries(self.log)

    def count(self) -> int:
        """How many messages it received, without parsing the log: cheap enough to poll."""
        return self.log.read_bytes().count(b"\n") if self.log.exists() else 0

    def message_ids(self) -> list[str]:
        return [d.message_id for d in self.deliveries()]

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()      # the catcher stops when its stdin closes
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="An SMTP server writing one JSON line per message received, "
                                                 "until its stdin closes.")
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    with LoggingCatcher(args.log, host=args.host, port=args.port) as catcher:
        print(json.dumps({"port": catcher.port}), flush=True)
        sys.stdin.read()


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()
