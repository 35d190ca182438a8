"""State figures: applying a check of a 10,000-post source with 10 changes (SQLite and PostgreSQL).

    .venv/bin/python bench/bench_state.py [--postgres URL]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crawler.items import PostItem  # noqa: E402
from state import CheckInput, SourceRecord, Store  # noqa: E402
from state.normalize import normalize  # noqa: E402

N = 10_000
NOW = datetime(2026, 11, 1, tzinfo=timezone.utc)


def post(n, body=None, origin="listing"):
    return PostItem(url=f"https://blog.example/p/{n}", title=f"Post {n}", published=NOW, body_html=body, summary=None,
                    origin=origin)


def bench(store: Store, label: str) -> None:
    store.sync_sources([SourceRecord(name="big", url="https://blog.example/")])
    started = time.perf_counter()
    store.apply_check("big", CheckInput(posts=[post(n, f"<p>Body {n}</p><p>Second {n}</p>", "page") for n in range(N)],
                                        baseline=True), NOW)
    seeded = time.perf_counter() - started
    changed = [post(n, f"<p>Body {n} edited</p><p>Second {n}</p>", "page") for n in range(0, N, N // 10)]
    check = CheckInput(posts=[post(n) for n in range(N)] + changed)
    # An edit is published when a second fetch sees it: the first check only keeps candidates.
    started = time.perf_counter()
    first = store.apply_check("big", check, NOW + timedelta(minutes=30))
    seen_once = time.perf_counter() - started
    assert first.events == [] and first.pending_edits == 10, first
    started = time.perf_counter()
    normalize_time = sum(_timed(lambda: normalize(p.body_html)) for p in changed)
    result = store.apply_check("big", check, NOW + timedelta(hours=1))
    applied = time.perf_counter() - started
    assert len(result.events) == 10 and not result.held, result
    print(f"{label}: baseline of {N} posts {seeded * 1000:.0f} ms; check of {N} posts seeing 10 edits once "
          f"{seen_once * 1000:.0f} ms; the check confirming them: normalise+diff {normalize_time * 1000:.1f} ms, "
          f"apply+commit {applied * 1000:.0f} ms (target: diff <= 100 ms, apply+commit <= 200 ms)")


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = Store(str(Path(folder) / "bench.db"))
        bench(store, "sqlite")
        store.close()
    try:
        import uuid

        from sqlalchemy import create_engine, text

        schema = f"bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        try:
            store = Store(args.postgres, connect_args={"options": f"-csearch_path={schema}"})
            bench(store, "postgresql")
            store.close()
        finally:
            with admin.connect() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    except Exception as exc:  # no server: say so, the SQLite figure stands
        print(f"postgresql: not measured ({type(exc).__name__}: {exc})")


if __name__ == "__main__":
    main()
