"""Config values that used to give tracebacks, hang or be accepted silently: `postwatch config
check` and loading refuse each with one line naming the file, section and key (exit status 2)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def postwatch(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("POSTWATCH_CONFIG", "POSTWATCH_SMTP_PASSWORD")}
    env["POSTWATCH_SECRET"] = "test-secret"
    return subprocess.run([sys.executable, "-m", "postwatch", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


def assert_one_line_refusal(result: subprocess.CompletedProcess, *expected: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


SOURCE = '[[sources]]\nname = "blog"\nurl = "https://blog.example.org/"\n'

# (id, TOML, what the one line must name)
BAD_VALUES = [
    ("a source's lang that is no language tag", SOURCE + 'lang = "English!"\n', ["source 'blog'", "lang 'English!'"]),
    ("parallel_sources negative", "[crawl]\nparallel_sources = -1\n", ["[crawl] parallel_sources", "-1"]),
    ("parallel_sources zero (check hung)", "[crawl]\nparallel_sources = 0\n", ["[crawl] parallel_sources", "0"]),
    ("listen port 99999", '[daemon]\nlisten = "127.0.0.1:99999"\n', ["[daemon] listen", "99999"]),
    ("listen port 0", '[daemon]\nlisten = "127.0.0.1:0"\n', ["[daemon] listen"]),
    ("interval inf", "[crawl]\ninterval = inf\n", ["[crawl] interval", "inf"]),
    ("interval nan", "[crawl]\ninterval = nan\n", ["[crawl] interval", "nan"]),
    ("interval 1e300", "[crawl]\ninterval = 1e300\n", ["[crawl] interval"]),
    ("interval huge string", '[crawl]\ninterval = "99999999999999999999d"\n', ["[crawl] interval"]),
    ("interval zero", '[crawl]\ninterval = "0s"\n', ["[crawl] interval"]),
    ("source interval inf", SOURCE + "interval = inf\n", ["source 'blog'", "interval"]),
    ("source interval zero", SOURCE + 'interval = "0s"\n', ["source 'blog'", "interval"]),
    ("source url broken IPv6", '[[sources]]\nname = "v6"\nurl = "http://[::1/"\n', ["source 'v6'", "http://[::1/"]),
    ("source url port out of range", '[[sources]]\nname = "p"\nurl = "http://example.org:99999/"\n', ["source 'p'", "url"]),
    ("psycopg2 URL", 'database = "postgresql+psycopg2://pw:secret@db.example.org/pw"\n',
     ["database", "postgresql+psycopg://", "psycopg 3"]),
    ("mysql URL", 'database = "mysql://db.example.org/pw"\n', ["database", "postgresql://"]),
    ("timeout negative", "[crawl]\ntimeout = -5\n", ["[crawl] timeout", "-5"]),
    ("timeout zero", "[crawl]\ntimeout = 0\n", ["[crawl] timeout"]),
    ("retries negative", "[crawl]\nretries = -1\n", ["[crawl] retries", "-1"]),
    ("max_page_mb negative", "[crawl]\nmax_page_mb = -1\n", ["[crawl] max_page_mb", "-1"]),
    ("download_delay negative", "[crawl]\ndownload_delay = -0.5\n", ["[crawl] download_delay", "-0.5"]),
    ("download_delay inf", "[crawl]\ndownload_delay = inf\n", ["[crawl] download_delay", "inf"]),
    ("jitter negative", "[crawl]\njitter = -30\n", ["[crawl] jitter"]),
    ("concurrency_per_host zero", "[crawl]\nconcurrency_per_host = 0\n", ["[crawl] concurrency_per_host", "0"]),
    ("flood_share nan", "[crawl]\nflood_share = nan\n", ["[crawl] flood_share"]),
    ("robots_ttl huge", '[crawl]\nrobots_ttl = "5000d"\n', ["[crawl] robots_ttl"]),
    ("smtp port 99999", '[smtp]\nhost = "smtp.example.org"\nport = 99999\n', ["[smtp] port", "99999"]),
    ("smtp timeout zero", "[smtp]\ntimeout = 0\n", ["[smtp] timeout"]),
    ("max_attempts zero", "[digest]\nmax_attempts = 0\n", ["[digest] max_attempts", "0"]),
    ("default_weekday 9", "[digest]\ndefault_weekday = 9\n", ["[digest] default_weekday", "9"]),
    ("send_lease zero", '[digest]\nsend_lease = "0s"\n', ["[digest] send_lease"]),
    ("retention zero", '[daemon]\nretention = "0s"\n', ["[daemon] retention"]),
    ("shutdown_grace inf", "[daemon]\nshutdown_grace = inf\n", ["[daemon] shutdown_grace"]),
    ("failures_before_alert zero", "[alerts]\nfailures_before_alert = 0\n", ["[alerts] failures_before_alert"]),
    ("alerts every zero", '[alerts]\nevery = "0s"\n', ["[alerts] every"]),
    ("bad CSS selector", SOURCE + '[sources.selectors]\nbody = "div["\n', ["source 'blog'", "body", "div["]),
    ("unknown CSS pseudo-element", SOURCE + '[sources.selectors]\ntitle = "h1::shadow"\n', ["source 'blog'", "title"]),
    ("unknown delivery channel", '[delivery]\nchannel = "pigeon"\n',
     ["[delivery] channel 'pigeon' is not a delivery channel", "known: folder, smtp"]),
    ("smtp channel without a host", '[delivery]\nchannel = "smtp"\n', ["[delivery] channel 'smtp'", "[smtp] host"]),
    ("options for the folder channel", '[delivery]\noptions = { path = "mail" }\n', ["[delivery] options", "[digest] outbox"]),
    ("delivery options not a table", '[delivery]\noptions = "path=mail"\n', ["[delivery] options", "must be a table"]),
    ("log_format xml", '[daemon]\nlog_format = "xml"\n', ["[daemon] log_format must be text or json", "'xml'"]),
    # Keyword filters match with RE2 (linear time): what needs backtracking is refused, saying why.
    ("source include with a lookahead", SOURCE + 'include = ["/(?=a)b/"]\n',
     ["source 'blog'", "include '/(?=a)b/' is not supported: lookahead", "linear time"]),
    ("route exclude with a backreference", '[[routes]]\nto = "ops@example.org"\nexclude = ["/(a)\\\\1/"]\n',
     ["[[routes]] #1 (ops@example.org)", "exclude '/(a)\\\\1/' is not supported: backreference", "linear time"]),
]


@pytest.mark.parametrize("toml, expected", [case[1:] for case in BAD_VALUES], ids=[case[0] for case in BAD_VALUES])
def test_config_check_refuses_each_bad_value_in_one_line(tmp_path, toml, expected):
    (tmp_path / "bad.toml").write_text(toml, encoding="utf-8")
    line = assert_one_line_refusal(postwatch("--config", "bad.toml", "config", "check", cwd=tmp_path), *expected)
    assert line.startswith("postwatch: ") and "bad.toml" in line


def test_a_command_refuses_the_config_too_instead_of_hanging(tmp_path):
    """parallel_sources = 0 used to make `check` wait forever on a zero-sized semaphore."""
    (tmp_path / "bad.toml").write_text('database = "state.db"\n[crawl]\nparallel_sources = 0\n' + SOURCE, encoding="utf-8")
    assert_one_line_refusal(postwatch("--config", "bad.toml", "check", cwd=tmp_path, timeout=60), "parallel_sources")
    assert not (tmp_path / "state.db").exists()


def test_config_file_that_is_not_utf8_is_one_line(tmp_path):
    (tmp_path / "latin1.toml").write_bytes('[digest]\nsite_name = "Nachrichten für Sie"\n'.encode("latin-1"))
    assert_one_line_refusal(postwatch("--config", "latin1.toml", "config", "check", cwd=tmp_path),
                            "latin1.toml", "line 2", "UTF-8")


def test_config_path_that_is_a_folder_is_one_line(tmp_path):
    (tmp_path / "conf.d").mkdir()
    assert_one_line_refusal(postwatch("--config", "conf.d", "config", "check", cwd=tmp_path), "conf.d", "folder")


@pytest.mark.parametrize("mode, who", [(0o666, "others"), (0o620, "group")])
def test_config_writable_by_others_is_refused(tmp_path, mode, who):
    path = tmp_path / "postwatch.toml"
    path.write_text('database = "state.db"\n', encoding="utf-8")
    path.chmod(mode)
    if who == "group":
        shared = shared_group()
        if shared is None:
            pytest.fail("this test needs a group other than the user's own to give the file to (run it as root, "
                        "or as a user in a second group): without one the group-writable refusal goes untested")
        os.chown(path, -1, shared)
    line = assert_one_line_refusal(postwatch("--config", "postwatch.toml", "config", "check", cwd=tmp_path),
                                   "postwatch.toml", "writable", who, "chmod go-w")
    assert f"{mode:04o}" in line
    assert_one_line_refusal(postwatch("--config", "postwatch.toml", "status", cwd=tmp_path), "writable")
    assert not (tmp_path / "state.db").exists()
    path.chmod(0o600)
    assert postwatch("--config", "postwatch.toml", "config", "check", cwd=tmp_path).returncode == 0


def shared_group() -> int | None:
    """A group id the file can be given to that is not the user's own private group."""
    if os.geteuid() == 0:
        return 54321                      # root may give a file to any group, even one without a name
    own = os.getgid()
    return next((gid for gid in os.getgroups() if gid != own), None)


def test_group_writable_in_the_owners_private_group_is_accepted(tmp_path):
    """umask 002 systems (Ubuntu's user-private groups) create files group-writable; nobody else
    is in that group, so ssh (as Debian ships it) and postwatch accept them."""
    import grp
    import pwd

    me = pwd.getpwuid(os.geteuid())
    group = grp.getgrgid(me.pw_gid)
    if group.gr_name != me.pw_name or set(group.gr_mem) - {me.pw_name}:
        pytest.fail("this test needs a user with a private group (a group of the user's name with no other "
                    "member, as root has on Debian): without one the umask-002 acceptance goes untested")
    path = tmp_path / "postwatch.toml"
    path.write_text('database = "state.db"\n', encoding="utf-8")
    path.chmod(0o664)
    os.chown(path, -1, me.pw_gid)
    result = postwatch("--config", "postwatch.toml", "config", "check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_config_owned_by_another_user_is_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("giving a file to another user needs root: run this test as root, or the refusal of a config "
                    "owned by someone else goes untested")
    path = tmp_path / "postwatch.toml"
    path.write_text('database = "state.db"\n', encoding="utf-8")
    path.chmod(0o644)
    os.chown(path, 54321, -1)        # neither the user running postwatch (root) nor root
    assert_one_line_refusal(postwatch("--config", "postwatch.toml", "config", "check", cwd=tmp_path),
                            "postwatch.toml", "owned by uid 54321")


def test_sources_add_refuses_a_bad_selector_in_one_line(tmp_path):
    (tmp_path / "postwatch.toml").write_text('database = "state.db"\n', encoding="utf-8")
    result = postwatch("sources", "add", "https://blog.example.org/", "--name", "ex", "--no-test",
                       "--selector", "listing_item=article[", cwd=tmp_path)
    assert_one_line_refusal(result, "source 'ex'", "listing_item", "article[")
    listed = postwatch("sources", "list", cwd=tmp_path)
    assert "ex " not in listed.stdout
    fine = postwatch("sources", "add", "https://blog.example.org/", "--name", "ex", "--no-test",
                     "--selector", "listing_item=article.post", "--selector", "title=h1::text", cwd=tmp_path)
    assert fine.returncode == 0, fine.stderr


def test_the_shipped_example_and_the_defaults_stay_valid(tmp_path):
    example = postwatch("config", "example", cwd=tmp_path).stdout
    (tmp_path / "postwatch.toml").write_text(example, encoding="utf-8")
    assert postwatch("config", "check", cwd=tmp_path).returncode == 0
    (tmp_path / "postwatch.toml").unlink()
    assert postwatch("config", "check", cwd=tmp_path).returncode == 0
