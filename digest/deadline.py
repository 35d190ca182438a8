"""A total deadline on one outbound exchange (a webhook POST, one message's SMTP conversation).

Why not socket timeouts: they bound each read, and a receiver that sends one byte before each
read runs out keeps an exchange going for ever. Here one watchdog thread shuts down the sockets
of every exchange whose deadline has passed: the read blocked on such a socket returns at once
(end of stream), the client library raises, and the sender sees `expired` and reports a retry.
One thread for all deadlines, not a timer thread per message: a flush hands out thousands."""
from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time


class Deadline:
    """`with Deadline(seconds) as deadline:` around an exchange; `deadline.watch(sock)` for each
    socket it opens or reuses. A socket watched after the deadline passed is shut down at once."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.ends = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._over = False

    def remaining(self) -> float:
        return max(0.0, self.ends - time.monotonic())

    def watch(self, sock: socket.socket | None) -> socket.socket | None:
        if sock is None:
            return sock
        with self._lock:
            if not self.expired:
                self._sockets.append(sock)
                return sock
        _cut(sock)
        return sock

    def expire(self) -> None:
        with self._lock:
            if self._over:
                return        # the exchange ended in time: its kept-alive socket is not ours to cut
            self.expired = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _cut(sock)

    def __enter__(self) -> "Deadline":
        self.ends = time.monotonic() + self.seconds
        _WATCHDOG.add(self)
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._over = True
            self._sockets = []


def _cut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass          # closed already


class _Watchdog:
    def __init__(self):
        self._wake = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, deadline: Deadline) -> None:
        with self._wake:
            heapq.heappush(self._heap, (deadline.ends, next(self._order), deadline))
            if self._thread is None:
                # A daemon thread: it must never be what keeps a stopping process alive.
                self._thread = threading.Thread(target=self._run, name="postwatch-deadlines", daemon=True)
                self._thread.start()
            self._wake.notify()

    def _run(self) -> None:
        with self._wake:
            while True:
                while self._heap and self._heap[0][2]._over:
                    heapq.heappop(self._heap)          # ended in time
                if not self._heap:
                    self._wake.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                heapq.heappop(self._heap)[2].expire()


_WATCHDOG = _Watchdog()
