"""Crash trials: `postwatch check --digest` killed with SIGKILL at random points, then restarted.

    .venv/bin/python bench/reliability.py --trials 50 [--seed N]

Each trial adds posts to the LiNK replica, starts the real CLI against it and a real SMTP
server, and kills it after a random delay (often mid-crawl, mid-apply or mid-send). After the
last trial one clean run drains everything. Then, over all trials: every new post must have
reached every subscriber exactly once (counted on the SMTP server by Message-ID and by title),
no stored post may be lost, and SQLite's integrity check must pass. Prints the figures; exits 1
when there are duplicates or losses.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

SUBSCRIBERS = ["ada@example.org", "kim@example.org", "lee@example.org"]


def cli(config: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "POSTWATCH_SECRET": "trial-secret"}
    return subprocess.Popen([sys.executable, "-m", "postwatch", "--config", str(config), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=config.parent)


def run_trials(trials: int, seed: int, folder: Path, verbose: bool = True) -> dict:
    from conftest import write_config
    from postwatch.mailcatcher import MailCatcher
    from postwatch.replica import BlogReplica

    rng = random.Random(seed)
    added_titles: list[str] = []
    kills = 0
    with BlogReplica() as site, MailCatcher() as smtp:
        # Lease shorter than a trial, so a message a killed run had leased is retried by the next.
        config = write_config(folder, site.blog_url, smtp.port, extra="")
        config.write_text(config.read_text().replace('[digest]\n', '[digest]\nsend_lease = "1s"\n'))
        started = time.monotonic()
        assert cli(config, "check").wait(60) == 0
        # Kill points spread over a whole run (a quarter of runs finish), however fast this
        # machine makes one.
        run_time = time.monotonic() - started
        for line in (["subscribers", "add", s, "--cadence", "immediate"] for s in SUBSCRIBERS):
            assert cli(config, *line).wait(60) == 0
        for trial in range(trials):
            for _ in range(rng.randint(0, 2)):
                title = f"Trial {trial} post {len(added_titles)}"
                site.add_post(title, body_paragraphs=[f"Body of {title}."])
                added_titles.append(title)
            process = cli(config, "check", "--digest")
            delay = rng.uniform(0.2, 1.3 * run_time)
            started = time.monotonic()
            try:
                process.wait(timeout=delay)
                run_time = max(run_time, time.monotonic() - started)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                process.wait()
                kills += 1
            time.sleep(1.05)   # let a killed run's send lease lapse
        final = cli(config, "check", "--digest")
        final.wait(120)
        time.sleep(1.1)
        # Runs killed one after another can pile up more new posts than the flood guard lets
        # through at once; an operator releases them, and so does the drain.
        cli(config, "sources", "release", "link").wait(120)
        drain = cli(config, "digest")
        drain.wait(120)

        ids = smtp.message_ids()
        per_subscriber_titles: dict[str, Counter] = {s: Counter() for s in SUBSCRIBERS}
        for message, (_, recipients) in zip(smtp.messages, smtp.envelopes):
            body = message.get_body(preferencelist=("plain",)).get_content()
            for recipient in recipients:
                for title in added_titles:
                    if f"] {title}\n" in body or f"] {title}\r\n" in body:
                        per_subscriber_titles[recipient][title] += 1
        duplicates = sum(n - 1 for n in Counter(ids).values() if n > 1)
        duplicates += sum(n - 1 for counts in per_subscriber_titles.values() for n in counts.values() if n > 1)
        losses = sum(1 for s in SUBSCRIBERS for t in added_titles if per_subscriber_titles[s][t] == 0)
        db = sqlite3.connect(folder / "state.db")
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        stored = db.execute("SELECT count(*) FROM posts WHERE status = 'active'").fetchone()[0]
        db.close()
        lost_posts = len(site.posts) - stored
    figures = {"seed": seed, "trials": trials, "killed": kills, "events": len(added_titles),
               "deliveries": sum(sum(c.values()) for c in per_subscriber_titles.values()),
               "expected_deliveries": len(added_titles) * len(SUBSCRIBERS), "messages": len(ids),
               "duplicates": duplicates, "losses": losses, "lost_posts": lost_posts, "integrity": integrity}
    if verbose:
        print("  ".join(f"{k}={v}" for k, v in figures.items()))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    print(f"crash trials: seed {seed}, {args.trials} trials")
    with tempfile.TemporaryDirectory() as folder:
        figures = run_trials(args.trials, seed, Path(folder))
    ok = figures["duplicates"] == 0 and figures["losses"] == 0 and figures["lost_posts"] == 0 and figures["integrity"] == "ok"
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
