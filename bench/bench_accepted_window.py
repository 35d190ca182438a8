"""The accepted-message window: how long after the SMTP server's 250 a sender killed at that
moment would still forget the message (and the next flush send it again).

For each database, one flush of N digests to aiosmtpd's Sink (its own process), timing for each
message, from the moment the channel has the 250:
- `note`: until `note_accepted` returned (the journal line for SQLite; for PostgreSQL, the row
  marked sent there and then, synchronous_commit off): the window since #19;
- `mark`: until the flush's `mark_sent` returned: the window when nothing is noted first
  (PostgreSQL before #19; with the note on, PostgreSQL's mark_sent has nothing left to do).
Then the same flush again with the note turned off, to show what the note costs in messages/s.

    .venv/bin/python bench/bench_accepted_window.py [--subscribers 2000] [--connections 4]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_digest import seeded_store, sink_server  # noqa: E402

PG_SERVER = os.environ.get("POSTWATCH_TEST_PG_SERVER", "postgresql://postgres@127.0.0.1:5432")


def pg_database() -> tuple[str, callable]:
    import psycopg

    name = f"pw_window_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')

    def drop():
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return f"{PG_SERVER.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}", drop


def flush_timed(url: str, subscribers: int, connections: int, noting: bool) -> dict:
    from digest.delivery import make_channel
    from digest.sender import compose_and_queue, flush_outbox
    from digest.settings import DigestSettings, SmtpSettings

    now = datetime.now(timezone.utc)
    server, port = sink_server()
    store = seeded_store(url, subscribers, now)
    try:
        compose_and_queue(store, DigestSettings(secret=b"bench", source_titles={"link": "LiNK"}), now)
        accepted_at: dict[str, float] = {}
        note_windows, mark_windows = [], []
        lock = threading.Lock()
        note, mark = store.note_accepted, store.mark_sent

        def timed_note(item) -> None:
            at = time.perf_counter()
            with lock:
                accepted_at[item.id] = at
            if noting:
                note(item)
                note_windows.append(time.perf_counter() - at)

        def timed_mark(outbox_id, when, subscriber_id=None):
            mark(outbox_id, when, subscriber_id)
            if outbox_id in accepted_at:
                mark_windows.append(time.perf_counter() - accepted_at[outbox_id])

        store.note_accepted, store.mark_sent = timed_note, timed_mark
        channel = make_channel("smtp", settings=SmtpSettings(host="127.0.0.1", port=port, security="none",
                                                             connections=connections))
        started = time.perf_counter()
        with channel:
            stats = flush_outbox(store, channel, now)
        elapsed = time.perf_counter() - started
    finally:
        store.close()
        server.terminate()
        server.wait()
    return {"sent": stats.sent, "rate": stats.sent / elapsed, "note": note_windows, "mark": mark_windows}


def ms(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    print(f"{args.subscribers} digests, {args.connections} SMTP connections, load {os.getloadavg()[0]:.1f}")
    print("window: from the 250 to the message being on record; ms median / p99 / max")
    print(f"{'database':<11} {'without the note':>24} {'with the note':>24} {'msgs/s without':>15} {'with':>6}")
    with tempfile.TemporaryDirectory() as folder:
        for label, make in (("SQLite", lambda: (str(Path(folder) / f"{uuid.uuid4().hex}.db"), lambda: None)),
                            ("PostgreSQL", pg_database)):
            runs = {}
            for noting in (False, True):
                url, drop = make()
                try:
                    runs[noting] = flush_timed(url, args.subscribers, args.connections, noting=noting)
                finally:
                    drop()
            before, after = runs[False]["mark"], runs[True]["note"]
            print(f"{label:<11} {window(before):>24} {window(after):>24} {runs[False]['rate']:>15.0f} "
                  f"{runs[True]['rate']:>6.0f}")


def window(values: list[float]) -> str:
    return " / ".join(ms(values, q) for q in (0.5, 0.99, 1.0))


if __name__ == "__main__":
    main()
