"""Reliability trials: postwatch killed with SIGKILL at random points, or sending through a mail
server that fails at random; afterwards nothing may be lost and nothing sent twice.

    python bench/reliability.py [--mode cli] --trials 50 [--seed N]
    python bench/reliability.py --mode daemon --trials 50 [--seed N]
    python bench/reliability.py --mode smtp-faults --minutes 10 [--seed N]

cli          `postwatch check --digest` against the LiNK replica, killed after a random delay
             (often mid-crawl, mid-apply or mid-send), then restarted; one clean run drains.
daemon       `postwatch run` watching three sources (two LiNK replicas and a WordPress-style blog)
             for three immediate subscribers, through an SMTP server that takes 0.2-0.5 s per
             message. Each trial adds 0-2 posts and kills the daemon at a random point of a run.
smtp-faults  `postwatch run` for N minutes on the same three sources while posts appear at random
             and the SMTP server, at random, refuses connections or answers 451 to MAIL, RCPT or
             DATA. Then the faults stop.

Kill points are spread over the time one run takes to check and send, measured on this machine
(so about a quarter of the kills hit a run that had finished its work). Every trial ends with a
clean run left to drain; changes the flood guard held as suspect are released as an operator
would. Then, over the whole run: every new post must have reached every subscriber exactly once
(counted on the SMTP server by Message-ID and by title), no stored post may be lost, SQLite's
integrity check must pass, and (daemon modes) no message may still be pending more than one
outbox period after its backoff ended. Prints the figures on one line; exits 1 on any duplicate,
loss, stuck message or daemon crash.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))     # support: the test helpers kept out of the wheel

from postwatch.testing.mailcatcher import MailCatcher, _KeepingHandler  # noqa: E402

SUBSCRIBERS = ["ada@example.org", "kim@example.org", "lee@example.org"]

# The daemon modes' settings.
SOURCE_INTERVAL = timedelta(seconds=2)
OUTBOX_EVERY = timedelta(seconds=1)       # [daemon] outbox_every
RETRY_AFTER = timedelta(seconds=1)        # [digest] retry_after: the first retry's backoff
# Longer than one flush of a trial's messages through the slow server takes (so a live daemon
# never hands one message out twice), short enough that what a killed daemon had leased is free
# again during the drain.
SEND_LEASE = timedelta(seconds=10)
SMTP_SECONDS_PER_MESSAGE = (0.2, 0.5)
# A pending message is stuck when it is still there this long after one outbox period past the
# end of its backoff: the outbox pass itself (connecting, a slow server, a few dozen messages).
PASS_ALLOWANCE = timedelta(seconds=5)


def cli(config: Path, *args: str, log: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "POSTWATCH_SECRET": "trial-secret"}
    # A daemon logs for minutes: into a file, as a pipe nobody reads would fill up and block it.
    stderr = open(log, "ab") if log else subprocess.PIPE
    try:
        return subprocess.Popen([sys.executable, "-m", "postwatch", "--config", str(config), *args],
                                stdout=subprocess.DEVNULL, stderr=stderr, env=env, cwd=config.parent)
    finally:
        if log:
            stderr.close()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _stored_time(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


# ---------------------------------------------------------------------------------------------
# Verification, shared by every mode
# ---------------------------------------------------------------------------------------------
def deliveries(smtp: MailCatcher, titles: list[str], window_ids: set[str] = frozenset()) -> dict[str, Counter]:
    """Per subscriber: how many received messages named each title. A second copy of a message
    in `window_ids` (see `smtp_window`) is left out: it is counted as a window copy instead."""
    per_subscriber: dict[str, Counter] = {s: Counter() for s in SUBSCRIBERS}
    seen: set[str] = set()
    for message, (_, recipients) in zip(list(smtp.messages), list(smtp.envelopes)):
        message_id = str(message.get("Message-ID"))
        if message_id in window_ids and message_id in seen:
            continue
        seen.add(message_id)
        body = message.get_body(preferencelist=("plain",)).get_content()
        for recipient in recipients:
            for title in titles:
                if f"] {title}\n" in body or f"] {title}\r\n" in body:
                    per_subscriber.setdefault(recipient, Counter())[title] += 1
    return per_subscriber


def all_delivered(smtp: MailCatcher, titles: list[str]) -> bool:
    received = deliveries(smtp, titles)
    return all(received[s][t] > 0 for s in SUBSCRIBERS for t in titles)


def pending_messages(database: Path) -> list[tuple[datetime, datetime]]:
    """(created, due) of each message still pending in the outbox; due is when its backoff ends."""
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT created_at, next_attempt_at FROM outbox WHERE status = 'pending'").fetchall()
    return [(_stored_time(created), _stored_time(due)) for created, due in rows]


def verify(folder: Path, smtp: MailCatcher, sites: dict, titles: list[str], *,
           outbox_period: timedelta | None = None, ended_at: datetime | None = None,
           window_ids: set[str] = frozenset()) -> dict:
    """The figures every mode reports: deliveries, duplicates, losses, lost posts, integrity and,
    when an outbox period is given, messages pending longer than their backoff plus that period."""
    received = deliveries(smtp, titles, window_ids)
    ids = smtp.message_ids()
    copies = Counter(ids)
    window_copies = sum(copies[i] - 1 for i in window_ids if copies[i] > 1)
    duplicates = sum(n - 1 for i, n in copies.items() if n > 1 and i not in window_ids)
    duplicates += sum(n - 1 for counts in received.values() for n in counts.values() if n > 1)
    losses = sum(1 for s in SUBSCRIBERS for t in titles if received[s][t] == 0)
    with sqlite3.connect(folder / "state.db") as db:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        stored = dict(db.execute("SELECT sources.name, count(*) FROM posts JOIN sources ON sources.id = "
                                 "posts.source_id WHERE posts.status = 'active' GROUP BY sources.name").fetchall())
    figures = {"events": len(titles), "deliveries": sum(sum(c.values()) for c in received.values()),
               "expected_deliveries": len(titles) * len(SUBSCRIBERS), "messages": len(ids),
               "duplicates": duplicates, "smtp_window_copies": window_copies, "losses": losses,
               "lost_posts": sum(max(0, len(site.posts) - stored.get(name, 0)) for name, site in sites.items()),
               "integrity": integrity}
    if outbox_period is not None:
        pending = pending_messages(folder / "state.db")
        limit = outbox_period + PASS_ALLOWANCE
        figures["pending"] = len(pending)
        figures["stuck"] = sum(1 for _, due in pending if (ended_at or utcnow()) - due > limit)
        figures["oldest_pending_s"] = round(max(((ended_at or utcnow()) - created).total_seconds()
                                                for created, _ in pending), 1) if pending else 0
    return figures


def passed(figures: dict) -> bool:
    return (figures["duplicates"] == 0 and figures["losses"] == 0 and figures["lost_posts"] == 0
            and figures["integrity"] == "ok" and figures.get("stuck", 0) == 0 and figures.get("crashes", 0) == 0)


def show(figures: dict) -> None:
    print("  ".join(f"{k}={v}" for k, v in figures.items()), flush=True)


def accepted_but_pending(folder: Path, smtp: MailCatcher) -> set[str]:
    """Message-IDs the SMTP server accepted whose outbox row is still pending right after a
    SIGKILL, and which the killed sender had not yet written into its accepted-message journal
    (state/accepted.py): it was killed between the server taking the message and the server's
    250 reaching it and being written down, the window SMTP cannot close (RFC 1047), so each of
    them goes out again."""
    with sqlite3.connect(folder / "state.db") as db:
        pending = {row[0] for row in db.execute("SELECT message_id FROM outbox WHERE status = 'pending'")}
    journaled: set[str] = set()
    for journal in folder.glob("state.db.accepted*"):
        journaled |= set(journal.read_text("ascii", "replace").split())
    return (pending - journaled) & set(smtp.message_ids())


# ---------------------------------------------------------------------------------------------
# Mode cli: `postwatch check --digest` killed and restarted
# ---------------------------------------------------------------------------------------------
def run_trials(trials: int, seed: int, folder: Path, verbose: bool = True) -> dict:
    from support.harness import write_config
    from postwatch.testing.replica import BlogReplica

    rng = random.Random(seed)
    added_titles: list[str] = []
    kills = 0
    window_ids: set[str] = set()
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
        trial = 0
        # A run that got faster than the first one (a loaded machine calming down) may outrun
        # every kill point: a few more trials then, so that every run kills at least once.
        while trial < trials or (kills == 0 and trial < 3 * trials):
            trial += 1
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
                window_ids |= accepted_but_pending(folder, smtp)
            time.sleep(1.05)   # let a killed run's send lease lapse
        final = cli(config, "check", "--digest")
        final.wait(120)
        time.sleep(1.1)
        # Runs killed one after another can pile up more new posts than the flood guard lets
        # through at once; an operator releases them, and so does the drain.
        cli(config, "sources", "release", "link").wait(120)
        drain = cli(config, "digest")
        drain.wait(120)
        figures = {"mode": "cli", "seed": seed, "trials": trial, "killed": kills,
                   **verify(folder, smtp, {"link": site}, added_titles, window_ids=window_ids)}
    if verbose:
        show(figures)
    return figures


# ---------------------------------------------------------------------------------------------
# The daemon modes' world: three sources, three immediate subscribers, a slow SMTP server
# ---------------------------------------------------------------------------------------------
class _TrialHandler(_KeepingHandler):
    """Slow, and failing whenever the server's weather says so. The delay comes before the
    message is kept: a client that vanishes meanwhile leaves nothing behind (aiosmtpd cancels
    the handler when the connection drops), as with a real server that had not yet accepted."""

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: N802 - aiosmtpd hook
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return self.catcher.fault_at("MAIL") or "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 - aiosmtpd hook
        refusal = self.catcher.fault_at("RCPT")
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd hook
        self.catcher.receiving += 1
        try:
            await asyncio.sleep(self.catcher.rng.uniform(*self.catcher.seconds_per_message))
            return self.catcher.fault_at("DATA") or await super().handle_DATA(server, session, envelope)
        finally:
            self.catcher.receiving -= 1


class TrialSmtp(MailCatcher):
    """A MailCatcher that takes 0.2-0.5 s per message and, while `weather` is not "ok", answers
    451 to MAIL, RCPT or DATA ("451 MAIL", ..., or "flaky": one command in five)."""

    handler_class = _TrialHandler

    def __init__(self, rng: random.Random, seconds_per_message=SMTP_SECONDS_PER_MESSAGE):
        super().__init__()
        self.rng, self.seconds_per_message = rng, seconds_per_message
        self.weather = "ok"
        self.faults = 0
        self.receiving = 0      # messages in the DATA phase right now

    def fault_at(self, command: str) -> str | None:
        if self.weather == f"451 {command}" or (self.weather == "flaky" and self.rng.random() < 0.2):
            self.faults += 1
            return "451 4.3.0 Trial fault: try again later"
        return None


class SmtpWeather(threading.Thread):
    """Every 1-6 s the server's behaviour changes at random: half of the periods it works, the
    others it refuses connections (the port closed), answers 451 at MAIL, RCPT or DATA, or is
    flaky. stop() leaves it working."""

    FAULTS = ["refuse", "451 MAIL", "451 RCPT", "451 DATA", "flaky"]

    def __init__(self, smtp: TrialSmtp, rng: random.Random):
        super().__init__(name="smtp-weather", daemon=True)
        self.smtp, self.rng = smtp, rng
        self.finished = threading.Event()
        self.periods: Counter = Counter()
        self.refused_seconds = 0.0

    def run(self) -> None:
        while not self.finished.is_set():
            weather = "ok" if self.rng.random() < 0.5 else self.rng.choice(self.FAULTS)
            length = self.rng.uniform(1, 6)
            self.periods[weather] += 1
            if weather == "refuse":
                self.smtp.stop()
                self.finished.wait(length)
                self.smtp.start()
                self.refused_seconds += length
            else:
                self.smtp.weather = weather
                self.finished.wait(length)
        self.smtp.weather = "ok"

    def stop(self) -> None:
        self.finished.set()
        self.join()


def knows_outbox_settings() -> bool:
    """[daemon] outbox_every and [digest] retry_after come with the fix of issue #13; a postwatch
    before it refuses them, and then runs on its built-in outbox period and first backoff."""
    from postwatch.config import ConfigError, parse_config

    try:
        parse_config({"daemon": {"outbox_every": "1s"}, "digest": {"retry_after": "1s"}})
        return True
    except ConfigError:
        return False


def _toml_duration(value: timedelta) -> str:
    return f'"{int(value.total_seconds())}s"'


class DaemonLab:
    """`with DaemonLab(folder, seed) as lab:` — three replica sources with a baseline, three
    immediate subscribers, a slow TrialSmtp and a config for `postwatch run`."""

    def __init__(self, folder: Path, seed: int):
        self.folder, self.seed = folder, seed
        self.rng = random.Random(seed)
        self.titles: list[str] = []
        self.crashes = 0
        self._stack = ExitStack()

    def __enter__(self) -> "DaemonLab":
        from postwatch.testing.replica import BlogReplica, WordPressReplica

        try:
            self.sites = {"link": BlogReplica(), "link2": BlogReplica(), "wp": WordPressReplica()}
            for site in self.sites.values():
                self._stack.enter_context(site)
            self.smtp = self._stack.enter_context(TrialSmtp(random.Random(self.seed + 1)))
            self._prepare()
        except BaseException:
            self._stack.close()
            raise
        return self

    def _prepare(self) -> None:
        from support.harness import free_port

        self.log = self.folder / "daemon.log"
        self.outbox_settings = knows_outbox_settings()
        if self.outbox_settings:
            self.outbox_period = OUTBOX_EVERY
        else:
            from scheduler import Daemon

            self.outbox_period = timedelta(seconds=getattr(Daemon, "OUTBOX_EVERY", 60))
            print(f"note: this postwatch knows no [daemon] outbox_every / [digest] retry_after; the daemon runs "
                  f"on its built-in outbox period ({self.outbox_period.total_seconds():.0f} s) and first backoff",
                  file=sys.stderr)
        self.config = self._write_config(free_port())
        self._run("check")
        people = self.folder / "subscribers.csv"
        people.write_text("email,cadence\n" + "".join(f"{s},immediate\n" for s in SUBSCRIBERS))
        self._run("subscribers", "import", str(people))

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def _write_config(self, listen_port: int) -> Path:
        kinds = {"link": "link", "link2": "link", "wp": "auto"}
        sources = "".join(f'[[sources]]\nname = "{name}"\nurl = "{site.blog_url}"\nkind = "{kinds[name]}"\n'
                          f'interval = {_toml_duration(SOURCE_INTERVAL)}\n\n' for name, site in self.sites.items())
        retry = f"retry_after = {_toml_duration(RETRY_AFTER)}\n" if self.outbox_settings else ""
        outbox = f"outbox_every = {_toml_duration(OUTBOX_EVERY)}\n" if self.outbox_settings else ""
        path = self.folder / "postwatch.toml"
        path.write_text(f'''database = "state.db"

[crawl]
download_delay = 0
autothrottle = false
timeout = 5
retries = 1
jitter = "0s"
removal_confirm_after = "0s"

{sources}[digest]
from = "postwatch <digest@postwatch.test>"
send_lease = {_toml_duration(SEND_LEASE)}
{retry}
[smtp]
host = "127.0.0.1"
port = {self.smtp.port}
security = "none"

[daemon]
listen = "127.0.0.1:{listen_port}"
{outbox}''', encoding="utf-8")
        return path

    def _run(self, *args: str) -> str:
        env = {**os.environ, "POSTWATCH_SECRET": "trial-secret"}
        result = subprocess.run([sys.executable, "-m", "postwatch", "--config", str(self.config), *args],
                                capture_output=True, text=True, env=env, cwd=self.folder, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"postwatch {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
        return result.stdout

    def add_posts(self, count: int, label: str) -> None:
        for _ in range(count):
            name = self.rng.choice(list(self.sites))
            title = f"{label} post {len(self.titles)} on {name}"
            self.sites[name].add_post(title, body_paragraphs=[f"Body of {title}."])
            self.titles.append(title)

    def start_daemon(self) -> subprocess.Popen:
        return cli(self.config, "run", log=self.log)

    def stop_daemon(self, daemon: subprocess.Popen) -> None:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
                self.crashes += 1
        elif daemon.returncode != 0:
            self.crashes += 1

    @staticmethod
    def wait(condition, daemon: subprocess.Popen, timeout: float = 120, every: float = 0.3) -> bool:
        """Until the condition holds, the daemon ended or the timeout passed."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline or daemon.poll() is not None:
                return False
            time.sleep(every)
        return True

    def accepted_but_pending(self) -> set[str]:
        return accepted_but_pending(self.folder, self.smtp)

    def all_delivered(self) -> bool:
        return all_delivered(self.smtp, self.titles)

    def checked_every_source_since(self, moment: datetime) -> bool:
        with sqlite3.connect(self.folder / "state.db") as db:
            times = [row[0] for row in db.execute("SELECT last_success_at FROM sources WHERE enabled")]
        return all(t and _stored_time(t) >= moment for t in times)

    def sources_holding_changes(self) -> list[str]:
        with sqlite3.connect(self.folder / "state.db") as db:
            return [row[0] for row in db.execute("SELECT DISTINCT sources.name FROM events JOIN sources ON "
                                                 "sources.id = events.source_id WHERE events.status = 'held'")]

    def drain(self, daemon: subprocess.Popen | None = None,
              backoff_cap: timedelta = timedelta(minutes=2)) -> tuple[int, datetime]:
        """A daemon (the one given, else a new one) left running until every post went out to
        every subscriber and nothing is pending; changes held as suspect are released once it
        has checked every source. It gets at least a few source intervals, the send lease and
        two outbox periods, and waits out the backoff of what is pending (up to backoff_cap
        more). Stopped with SIGTERM. Returns the number released and when the daemon stopped."""
        started = utcnow()
        daemon = daemon or self.start_daemon()
        self.wait(lambda: self.checked_every_source_since(started), daemon)
        released = 0
        for name in self.sources_holding_changes():
            words = self._run("sources", "release", name).split()
            released += int(words[words.index("released") + 1])
        least = time.monotonic() + (3 * SOURCE_INTERVAL + SEND_LEASE + 2 * self.outbox_period).total_seconds()
        most = least + backoff_cap.total_seconds()
        while time.monotonic() < most and daemon.poll() is None:
            pending = pending_messages(self.folder / "state.db")
            if not pending and self.all_delivered():
                break
            latest_due = max((due for _, due in pending), default=None)
            if time.monotonic() > least and (latest_due is None or
                                              utcnow() > latest_due + self.outbox_period + PASS_ALLOWANCE):
                break
            time.sleep(0.5)
        self.stop_daemon(daemon)
        return released, utcnow()

    def verify(self, ended_at: datetime, window_ids: set[str] = frozenset()) -> dict:
        return verify(self.folder, self.smtp, self.sites, self.titles, outbox_period=self.outbox_period,
                      ended_at=ended_at, window_ids=window_ids)


# ---------------------------------------------------------------------------------------------
# Mode daemon: `postwatch run` killed and restarted
# ---------------------------------------------------------------------------------------------
def run_daemon_trials(trials: int, seed: int, folder: Path, verbose: bool = True) -> dict:
    with DaemonLab(folder, seed) as lab:
        # A daemon's very first start schedules the first checks one interval later; from the
        # second on, the overdue checks run at once, as in every trial.
        started = utcnow()
        daemon = lab.start_daemon()
        lab.wait(lambda: lab.checked_every_source_since(started), daemon)
        lab.stop_daemon(daemon)
        # One measured run: from start until one new post per source reached every subscriber.
        for name, site in lab.sites.items():
            title = f"Measured run post on {name}"
            site.add_post(title, body_paragraphs=[f"Body of {title}."])
            lab.titles.append(title)
        started = time.monotonic()
        daemon = lab.start_daemon()
        lab.wait(lab.all_delivered, daemon, every=0.1)
        run_time = time.monotonic() - started
        lab.stop_daemon(daemon)
        if not lab.all_delivered():
            raise RuntimeError(f"the measured daemon run delivered {len(lab.smtp.messages)} of 9 messages in "
                               f"{run_time:.0f} s; see {lab.log}")

        kills = kills_mid_send = 0
        accepted_unrecorded: set[str] = set()
        for trial in range(trials):
            lab.add_posts(lab.rng.randint(0, 2), f"Trial {trial}")
            daemon = lab.start_daemon()
            try:
                daemon.wait(timeout=lab.rng.uniform(0.2, 1.3 * run_time))
                lab.crashes += 1            # a daemon does not end by itself
            except subprocess.TimeoutExpired:
                kills_mid_send += lab.smtp.receiving > 0
                daemon.send_signal(signal.SIGKILL)
                daemon.wait()
                kills += 1
                accepted_unrecorded |= lab.accepted_but_pending()
        released, ended_at = lab.drain()
        figures = {"mode": "daemon", "seed": seed, "trials": trials, "run_s": round(run_time, 1), "killed": kills,
                   "killed_mid_send": kills_mid_send, "accepted_unrecorded_at_kill": len(accepted_unrecorded),
                   "crashes": lab.crashes, "held_released": released, **lab.verify(ended_at, accepted_unrecorded)}
    if verbose:
        show(figures)
    return figures


# ---------------------------------------------------------------------------------------------
# Mode smtp-faults: one daemon, a mail server failing at random
# ---------------------------------------------------------------------------------------------
def run_smtp_faults(seconds: float, seed: int, folder: Path, verbose: bool = True) -> dict:
    with DaemonLab(folder, seed) as lab:
        weather = SmtpWeather(lab.smtp, random.Random(seed + 2))
        daemon = lab.start_daemon()
        weather.start()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(min(lab.rng.uniform(0.5, 4), max(0.0, end - time.monotonic())))
            lab.add_posts(1, "Stormy")
            if daemon.poll() is not None:
                lab.crashes += 1
                daemon = lab.start_daemon()
        weather.stop()
        released, ended_at = lab.drain(daemon, backoff_cap=timedelta(seconds=max(60.0, seconds)))
        with sqlite3.connect(folder / "state.db") as db:
            attempts = db.execute("SELECT coalesce(sum(attempts), 0) FROM outbox").fetchone()[0]
        fault_periods = sum(weather.periods.values()) - weather.periods["ok"]
        figures = {"mode": "smtp-faults", "seed": seed, "seconds": round(seconds), "fault_periods": fault_periods,
                   "faults_451": lab.smtp.faults, "refused_s": round(weather.refused_seconds), "send_attempts": attempts,
                   "crashes": lab.crashes, "held_released": released, **lab.verify(ended_at)}
    if verbose:
        show(figures)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["cli", "daemon", "smtp-faults"], default="cli")
    parser.add_argument("--trials", type=int, default=50, help="cli and daemon modes")
    parser.add_argument("--minutes", type=float, default=10, help="smtp-faults mode")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--folder", type=Path, default=None,
                        help="keep the database, config and daemon log here (default: a temporary folder)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    what = f"{args.minutes:g} minutes" if args.mode == "smtp-faults" else f"{args.trials} trials"
    print(f"reliability trials, mode {args.mode}: seed {seed}, {what}", flush=True)
    with ExitStack() as stack:
        folder = args.folder or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        folder.mkdir(parents=True, exist_ok=True)
        if args.mode == "cli":
            figures = run_trials(args.trials, seed, folder)
        elif args.mode == "daemon":
            figures = run_daemon_trials(args.trials, seed, folder)
        else:
            figures = run_smtp_faults(args.minutes * 60, seed, folder)
    return 0 if passed(figures) else 1


if __name__ == "__main__":
    sys.exit(main())
