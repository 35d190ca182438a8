"""Sweeps and the one politeness gate per host (issue #15), through the real CLI and `postwatch run`.

Many sources on one host (several blogs of one platform) share one gate: however many sources,
however many crawls, and whether the request comes from the lean revalidation client or from
Scrapy, two requests to that host never start closer together than the delay allows (0.5x the
configured delay: the delay is varied by +-50 % as Scrapy varies it).
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from support.harness import Cli, Daemon, free_port, wait_for
from postwatch.testing.replica import BlogReplica, generate_posts

DELAY = 0.3
# The replica stamps a request when its thread gets to it: on a loaded machine that can be tens of
# milliseconds late, which shortens a measured gap. Ungated requests came 0.16 ms apart.
LEAST_GAP = DELAY * 0.5 - 0.05


def many_sources_config(folder: Path, urls: list[str], *, delay: float = DELAY, interval: str | None = None,
                        listen_port: int | None = None, per_host: int = 2) -> Path:
    sources = "".join(f'\n[[sources]]\nname = "blog{n}"\nurl = "{url}"\nkind = "webflow"\n'
                      + (f'interval = "{interval}"\n' if interval else "") for n, url in enumerate(urls))
    text = f'''database = "state.db"

[crawl]
download_delay = {delay}
concurrency_per_host = {per_host}
jitter = "0s"
timeout = 5
retries = 1
{sources}
[digest]
from = "postwatch <digest@postwatch.test>"

[daemon]
listen = "127.0.0.1:{listen_port or free_port()}"
'''
    path = folder / "postwatch.toml"
    path.write_text(text, encoding="utf-8")
    return path


def start_gaps(site: BlogReplica) -> list[float]:
    times = sorted(r.time for r in site.requests)
    return [b - a for a, b in zip(times, times[1:])]


def small_blog() -> BlogReplica:
    return BlogReplica(generate_posts(4), url_variants=False)


def test_twenty_sources_on_one_host_keep_its_delay_on_the_first_pass_and_on_revalidation(tmp_path):
    with small_blog() as site:
        cli = Cli(many_sources_config(tmp_path, [f"{site.blog_url}?blog={n}" for n in range(20)]))
        first = cli("check", check=True)
        assert first.stdout.count("baseline recorded") == 20
        # One robots.txt for the origin in the sweep, not one per source.
        assert site.count("/robots.txt") == 1
        gaps = start_gaps(site)
        assert len(gaps) == 20 and min(gaps) >= LEAST_GAP, gaps

        site.clear_log()
        second = cli("check", check=True)
        assert second.stdout.count("no changes (1 requests, 0 bytes)") == 20, second.stdout
        assert site.count("/blog") == 20 and site.count("/blog", status=304) == 20
        gaps = start_gaps(site)
        assert min(gaps) >= LEAST_GAP, gaps


def test_new_posts_cost_one_request_each_beyond_the_listing_fetched_once(tmp_path):
    with small_blog() as site:
        cli = Cli(many_sources_config(tmp_path, [site.blog_url], delay=0))
        cli("check", check=True)
        site.clear_log()
        site.add_post("Rescue: a family of four reaches safety")
        site.add_post("Radio broadcasts reach the border")
        result = cli("check", check=True)
        assert "2 new (3 requests" in result.stdout, result.stdout
        assert [r.path for r in site.requests if r.path == "/blog"] == ["/blog"]   # answered once, by the lean client


def test_a_failing_source_does_not_change_another_sources_result_in_the_same_sweep(tmp_path):
    with small_blog() as healthy, small_blog() as broken:
        cli = Cli(many_sources_config(tmp_path, [healthy.blog_url, broken.blog_url], delay=0))
        cli("check", check=True)
        broken.set_fault("/blog", status=500)
        healthy.add_post("Twelve refugees reach freedom")
        result = cli("check")
        assert result.returncode == 1
        assert "blog0: 1 new" in result.stdout, result.stdout
        assert "blog1: listing" in result.stderr and "HTTP 500" in result.stderr, result.stderr
        history = cli("history", check=True).stdout
        assert "Twelve refugees reach freedom" in history
        status = cli("status", check=True).stdout
        assert "answered HTTP 500 after 2 attempts (1 in a row)" in status, status

        broken.clear_faults()
        again = cli("check", check=True)
        assert "blog1: no changes" in again.stdout and "blog0: no changes" in again.stdout


def test_retry_after_from_one_source_holds_the_host_for_every_source_on_it(tmp_path):
    with small_blog() as site:
        # One request in flight per host: with two, the second may leave before the 429 is back.
        cli = Cli(many_sources_config(tmp_path, [f"{site.blog_url}?blog={n}" for n in range(3)], delay=0, per_host=1))
        cli("check", check=True)
        site.clear_log()
        site.set_fault("/blog", status=429, headers={"Retry-After": "2"}, times=1)
        result = cli("check", check=True)
        assert result.stdout.count("no changes") == 3, result.stdout
        times = sorted(r.time for r in site.requests)
        refused_at = next(r.time for r in site.requests if r.status == 429)
        after = [t for t in times if t > refused_at]
        # Every later request to the host, whichever source it is for, waited out the Retry-After.
        assert len(times) == 4
        assert after and min(after) - refused_at >= 1.9, (refused_at, times)


def test_a_check_that_ends_with_its_304s_never_loads_scrapy(tmp_path):
    with small_blog() as site:
        config = many_sources_config(tmp_path, [site.blog_url], delay=0)
        Cli(config)("check", check=True)
        probe = ("import runpy, sys\n"
                 "sys.argv = ['postwatch', '--config', sys.argv[1], 'check']\n"
                 "try:\n    runpy.run_module('postwatch', run_name='__main__')\n"
                 "except SystemExit as exc:\n    code = exc.code\n"
                 "print('loaded:', sorted({m.split('.')[0] for m in sys.modules} & {'scrapy', 'twisted', 'alembic'}), "
                 "'exit:', code, file=sys.stderr)\n")
        result = subprocess.run([sys.executable, "-c", probe, str(config)], capture_output=True, text=True,
                                timeout=60, cwd=tmp_path)
        assert "no changes (1 requests, 0 bytes)" in result.stdout, result.stdout + result.stderr
        assert "loaded: [] exit: 0" in result.stderr, result.stderr


def test_the_daemon_sweeps_many_sources_on_one_host_without_breaking_its_delay(tmp_path):
    with small_blog() as site:
        port = free_port()
        cli = Cli(many_sources_config(tmp_path, [f"{site.blog_url}?blog={n}" for n in range(8)],
                                      interval="2s", listen_port=port))
        cli("check", check=True)
        site.clear_log()
        with Daemon(cli, port):
            # Each sweep revalidates all 8 sources; three sweeps' worth of requests.
            wait_for(lambda: site.count("/blog") >= 24, timeout=40, what="three sweeps of 8 sources")
            site.add_post("Outside information reaches Pyongyang")
            wait_for(lambda: cli("history").stdout.count("Outside information") == 8, timeout=40,
                     what="the new post, in all 8 sources")
        gaps = start_gaps(site)
        assert min(gaps) >= LEAST_GAP, sorted(gaps)[:5]
        history = cli("history").stdout
        assert history.count("Outside information reaches Pyongyang") == 8, history


def test_a_full_sweep_of_a_source_whose_listing_fails_asks_no_post_page(tmp_path):
    with BlogReplica(generate_posts(40), url_variants=False) as site:
        cli = Cli(many_sources_config(tmp_path, [site.blog_url], delay=0))
        cli("check", check=True)
        cli("check", "--full", check=True)              # every one of the 40 posts is known by its page
        site.clear_log()
        site.set_fault("/blog", status=500)
        result = cli("check", "--full")
        assert result.returncode == 1 and "HTTP 500" in result.stderr
        # The listing and its one retry: no post page is asked once the listing has failed
        # (before: 132 requests and 10 s for a failing 43-post source).
        assert [r.path for r in site.requests] == ["/blog", "/blog"], [r.path for r in site.requests][:5]


def test_a_gate_place_is_given_back_whatever_the_exchange_raises():
    from crawler.gate import GATE
    from crawler.plan import CrawlPlan, SourceSpec
    from crawler.revalidate import Revalidation, _exchange

    class Broken:
        def addresses(self, url, source_url):
            return ["127.0.0.9"]

        def get(self, url, address, validators):
            raise RuntimeError("a bug in the client")

    plan = CrawlPlan(source=SourceSpec(name="b", url="http://127.0.0.9:1/blog"))
    try:
        _exchange(Broken(), plan, [plan.source.url], Revalidation(source="b"), 300)
    except RuntimeError:
        pass
    # A place kept would make every later request to this host wait forever.
    assert GATE.in_flight("127.0.0.9") == 0


def test_a_request_that_reaches_its_host_late_still_leaves_the_host_its_gap():
    """The gate lets a request go; it reaches the host only later (held behind Scrapy's own
    slot delay, a slow connect, a paused process), and is answered at once. The next request to
    that host still waits the delay's shortest share after that answer: the gap the host sees."""
    import asyncio

    from crawler.gate import GateSettings, HostGate

    gate = HostGate(GateSettings(delay=0.4, jitter=0.5, concurrency=1))

    async def two_requests():
        await gate.acquire("blog.example.org")
        await asyncio.sleep(0.7)            # past any drawn delay (0.2-0.6 s) before it arrives
        answered = time.monotonic()
        gate.release("blog.example.org")
        assert gate.quiet_for("blog.example.org") >= 0.19     # what the next worker is told, too
        await gate.acquire("blog.example.org")
        return time.monotonic() - answered

    assert asyncio.run(two_requests()) >= 0.2 - 0.005
