"""A real webhook receiver on a loopback address, as a receiver of postwatch's webhooks would be
written: it checks the Postwatch-Signature of every POST (digest.webhook.verify_signature), drops
a delivery id it has already accepted (a replay, or a retry of a delivery it had taken), and
answers what a test tells it to (`answers`: 500, then 200...).

In a thread: `with WebhookReceiver(secret_for) as receiver: ... receiver.url("/hook")`.
In a process of its own (the benchmark): `python tests/support/webhook_receiver.py --host
127.0.0.2 --port 8790 --master-secret-env NAME` prints its URL, then one line per 1,000 accepted."""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from digest.webhook import DELIVERY_HEADER, SIGNATURE_HEADER, InvalidSignature, endpoint_secret, verify_signature


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    verdict: str              # "accepted", "answered 500", "replayed: ...", "bad signature: ..."
    status: int

    @property
    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)


class WebhookReceiver:
    """`secret_for(url)`: the signing secret the receiver at `url` was given."""

    def __init__(self, secret_for: Callable[[str], str], host: str = "127.0.0.1", port: int = 0,
                 tolerance: float = 300, keep: bool = True):
        self.secret_for, self.host, self.tolerance, self.keep = secret_for, host, tolerance, keep
        self.answers: deque[int | Answer] = deque()     # what to answer next, before the default 200
        self.requests: list[Delivery] = []              # every POST, in the order received
        self.accepted_count = 0
        self.seen: set[str] = set()
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer((host, port), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread: threading.Thread | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://{self.host}:{self.port}{path}"

    @property
    def accepted(self) -> list[Delivery]:
        return [d for d in self.requests if d.verdict == "accepted"]

    def check(self, url: str, headers: dict[str, str], body: bytes, now: float | None = None) -> str:
        """What a receiver decides about one request: "accepted", or why it is refused."""
        try:
            verify_signature(self.secret_for(url), headers.get(SIGNATURE_HEADER, ""), body,
                             tolerance=self.tolerance, now=now)
        except InvalidSignature as exc:
            return f"bad signature: {exc}"
        delivery = headers.get(DELIVERY_HEADER, "")
        if not delivery or json.loads(body).get("id") != delivery:
            return "bad signature: the delivery id of the header is not the body's"
        if delivery in self.seen:
            return f"replayed: delivery {delivery} was accepted before"
        return "accepted"

    def _handler(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"        # keep-alive, as a production server

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                # As production servers do: the status line and the body leave at once, not
                # 40 ms apart behind the client's delayed ACK (Nagle's algorithm).
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items()}
                url = f"http://{receiver.host}:{receiver.port}{self.path}"
                with receiver._lock:
                    verdict = receiver.check(url, headers, body)
                    answer = receiver.answers.popleft() if receiver.answers else Answer(200)
                    answer = answer if isinstance(answer, Answer) else Answer(answer)
                    status = answer.status
                    if verdict == "accepted" and 200 <= status < 300:
                        receiver.seen.add(headers[DELIVERY_HEADER])
                        receiver.accepted_count += 1
                    elif verdict == "accepted":
                        verdict = f"answered {status}"
                    elif verdict.startswith("replayed"):
                        status = 200       # a receiver acknowledges a duplicate and does nothing with it
                    else:
                        status = 401
                    if receiver.keep:
                        receiver.requests.append(Delivery(self.path, headers, body, verdict, status))
                reply = json.dumps({"verdict": verdict}).encode()
                self.send_response(status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        return Handler

    def __enter__(self) -> "WebhookReceiver":
        self._thread = threading.Thread(target=self.server.serve_forever, name="webhook-receiver", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a signature-checking webhook receiver for the benchmark")
    parser.add_argument("--host", default="127.0.0.2")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--master-secret-env", default="POSTWATCH_WEBHOOK_SECRET")
    args = parser.parse_args(argv)
    master = os.environ[args.master_secret_env].encode()
    receiver = WebhookReceiver(lambda url: endpoint_secret(master, url), args.host, args.port, keep=False)
    print(receiver.url(""), flush=True)
    try:
        receiver.server.serve_forever()
    except KeyboardInterrupt:
        pass
    print(f"accepted {receiver.accepted_count}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
