"""Servers and helpers for trying postwatch out without the internet: replicas of blogs
(`replica`), an SMTP server that keeps what it receives (`mailcatcher`), and a harness that
drives the real `postwatch` command against them (`harness`). `postwatch demo`, the tests and
the benchmarks use them; nothing else in postwatch does. Helpers only the tests and bench/
use (cluster trials, the replica farm, the webhook receiver, Chromium, the drip server) are in
tests/support/, outside the wheel."""
