"""Receivers that never quite answer, on a loopback port, for the delivery deadline tests: a
client whose timeout is per read waits on them for ever.

- `DripServer.webhook()`: reads a whole HTTP request, then sends its status line one byte every
  `every` seconds and never finishes it; `every=None` answers nothing at all.
- `DripServer.smtp()`: sends "220" and then drips the rest of the greeting the same way.

In a thread: `with DripServer.webhook(every=1) as hook: ... hook.url("/hook")`."""
from __future__ import annotations

import socket
import threading
import time


class DripServer:
    def __init__(self, greeting: bytes, drip: bytes, every: float | None, *, reads_request: bool):
        self.greeting, self.drip, self.every, self.reads_request = greeting, drip, every, reads_request
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests = 0            # requests read whole (webhook) or connections greeted (SMTP)
        self.open = 0                # connections the client still holds
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._connections: list[socket.socket] = []

    @classmethod
    def webhook(cls, every: float | None = 1.0) -> "DripServer":
        return cls(b"", b"HTTP/1.1 200 " + b"O" * 60_000, every, reads_request=True)

    @classmethod
    def smtp(cls, every: float | None = 1.0) -> "DripServer":
        return cls(b"220", b" drip.example ESMTP" + b"." * 60_000, every, reads_request=False)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _serve(self) -> None:
        while not self._closing.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self._connections.append(connection)
            threading.Thread(target=self._drip, args=(connection,), daemon=True).start()

    def _read_request(self, connection: socket.socket) -> bool:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = connection.recv(65536)
            if not chunk:
                return False
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            chunk = connection.recv(65536)
            if not chunk:
                return False
            body += chunk
        return True

    def _drip(self, connection: socket.socket) -> None:
        with self._lock:
            self.open += 1
        try:
            if self.reads_request and not self._read_request(connection):
                return
            with self._lock:
                self.requests += 1
            connection.sendall(self.greeting)
            for byte in self.drip:
                if self._closing.wait(self.every if self.every is not None else 3600):
                    return
                if self.every is not None:
                    connection.sendall(bytes([byte]))
        except OSError:
            pass            # the client hung up: what a deadline does
        finally:
            with self._lock:
                self.open -= 1
            connection.close()

    def __enter__(self) -> "DripServer":
        threading.Thread(target=self._serve, name="drip-server", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._closing.set()
        self.listener.close()
        for connection in self._connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def wait_open(server: DripServer, timeout: float = 30.0) -> float:
    """Wait until `server` holds a request it is not answering; the monotonic time it saw it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with server._lock:
            if server.open and server.requests:
                return time.monotonic()
        time.sleep(0.05)
    raise AssertionError("the drip server never got a request")
