"""What `postwatch run` says about its work (issue 29, finding 7: in 11 minutes the daemon used to
log its start line and nothing for the post it found, the digest it sent or the source that
broke). Driven as a subprocess against the blog replica and a real SMTP server: one INFO line
per check that found something and per batch of mail sent, nothing at INFO for quiet checks, one
ERROR when a source starts failing (not one per failed check) and one INFO when it recovers."""
from __future__ import annotations

import re
import signal

from support.harness import Cli, Daemon, free_port, wait_for, write_config

INTERVAL = 1


def test_the_daemon_says_what_it_found_sent_and_what_broke_once(tmp_path, site, smtp):
    port = free_port()
    config = write_config(tmp_path, site.blog_url, smtp.port, listen_port=port, interval=f"{INTERVAL}s",
                          extra='outbox_every = "1s"\n')
    cli = Cli(config)
    cli("check", check=True)                                      # the baseline
    cli("subscribers", "add", "ada@example.org", "--cadence", "immediate", check=True)
    with Daemon(cli, port) as daemon:
        wait_for(lambda: site.count("/blog") >= 3, timeout=20, what="a few quiet checks")
        site.add_post("Narrated post", body_paragraphs=["The daemon should say it found this."])
        wait_for(lambda: smtp.messages, timeout=20, what="the digest of the new post")
        site.set_fault("/blog", status=503, times=100)            # the listing breaks for a while
        failing_from = site.count("/blog")
        wait_for(lambda: site.count("/blog") >= failing_from + 4, timeout=30, what="several failed checks")
        site.clear_faults()
        recovered_from = site.count("/blog")
        wait_for(lambda: site.count("/blog") >= recovered_from + 2, timeout=20, what="checks after the recovery")
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(timeout=15) == 0
        log = daemon.process.stderr.read()
    lines = log.splitlines()
    found = [l for l in lines if " INFO " in l and re.search(r"link: 1 new \(\d+ requests", l)]
    assert len(found) == 1, log
    assert any(" INFO " in l and "mail: 1 sent" in l for l in lines), log
    # Quiet checks say nothing at INFO: only the start, the one find, the mail and the recovery.
    info = [l for l in lines if " INFO " in l]
    assert not [l for l in info if "no changes" in l], log
    started = [l for l in lines if "(started failing)" in l]
    assert len(started) == 1 and " ERROR " in started[0] and "link" in started[0], log
    assert not [l for l in lines if " ERROR " in l and l not in started], log
    assert [l for l in info if re.search(r"link: stopped failing after \d+ checks", l)], log
