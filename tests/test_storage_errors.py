"""Storage failures are one line naming the database; commands that only read write nothing."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.harness import PG_SERVER, Cli, checks_done, free_port, kill_backends, sql, wait_for, write_config

READING_COMMANDS = [("status",), ("history",), ("subscribers", "list"), ("sources", "list"), ("feed", "link")]
# Without CAP_DAC_OVERRIDE root obeys file modes like anyone else, so the folder is read-only to it.
AS_ORDINARY_USER = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"] if os.geteuid() == 0 else []


def postwatch(folder: Path, *args: str, read_only_folder: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "POSTWATCH_SECRET": "test-secret"}
    prefix = AS_ORDINARY_USER if read_only_folder else []
    return subprocess.run([*prefix, sys.executable, "-m", "postwatch", "--config", str(folder / "postwatch.toml"), *args],
                          capture_output=True, text=True, timeout=120, env=env, cwd=folder)


def one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.iterdir()}


@pytest.fixture
def folder_with_state(tmp_path):
    """A folder holding a config and a database with one source, one subscriber and no daemon."""
    from state import SourceRecord, Store

    (tmp_path / "postwatch.toml").write_text('database = "state.db"\n', encoding="utf-8")
    store = Store(str(tmp_path / "state.db"))
    store.sync_sources([SourceRecord(name="link", url="https://libertyinnorthkorea.org/blog", kind="link")])
    store.add_subscriber("ada@example.org")
    store.close()
    return tmp_path


def test_reading_commands_work_in_a_read_only_folder_and_write_nothing(folder_with_state):
    folder = folder_with_state
    before = snapshot(folder)
    folder.chmod(0o555)
    try:
        results = {args: postwatch(folder, *args, read_only_folder=True) for args in READING_COMMANDS}
    finally:
        folder.chmod(0o755)
    for args, result in results.items():
        assert result.returncode == 0, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert "link: https://libertyinnorthkorea.org/blog" in results[("status",)].stdout
    assert "ada@example.org" in results[("subscribers", "list")].stdout
    assert snapshot(folder) == before       # no -wal, -shm, lock or secret file; the database untouched


def test_reading_commands_in_a_writable_folder_create_no_file_and_change_nothing(folder_with_state):
    folder = folder_with_state
    before = snapshot(folder)
    for args in READING_COMMANDS:
        result = postwatch(folder, *args)
        assert result.returncode == 0, (args, result.stderr)
    assert snapshot(folder) == before


def test_reading_commands_leave_a_source_new_to_the_config_out_of_the_database(folder_with_state):
    """Opening the application for a command that only reads syncs no sources: a source added to
    the config reaches the database with the first command that writes."""
    folder = folder_with_state
    (folder / "postwatch.toml").write_text(
        'database = "state.db"\n'
        '[[sources]]\nname = "link"\nurl = "https://libertyinnorthkorea.org/blog"\nkind = "link"\n'
        '[[sources]]\nname = "dailynk"\nurl = "https://www.dailynk.com/english/"\n', encoding="utf-8")
    before = snapshot(folder)
    results = {args: postwatch(folder, *args) for args in READING_COMMANDS}
    assert all(result.returncode == 0 for result in results.values()), results
    assert "dailynk" not in results[("status",)].stdout + results[("sources", "list")].stdout
    assert snapshot(folder) == before

    assert postwatch(folder, "subscribers", "add", "bob@example.org").returncode == 0
    assert "dailynk" in postwatch(folder, "sources", "list").stdout


def test_sources_test_stores_nothing_and_creates_no_file(tmp_path, site):
    """With no config, as a newcomer tries a blog: what would be extracted, and no ./postwatch.db."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTWATCH_")}
    result = subprocess.run([sys.executable, "-m", "postwatch", "sources", "test", site.blog_url],
                            capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{site.blog_url}\n")
    assert int(re.search(r"posts: +(\d+) found on the first listing pages", result.stdout).group(1)) > 0
    assert list(tmp_path.iterdir()) == []


def test_writing_command_in_a_read_only_folder_is_one_line_naming_the_database(folder_with_state):
    folder = folder_with_state
    folder.chmod(0o555)
    try:
        line = one_line(postwatch(folder, "subscribers", "add", "bob@example.org", read_only_folder=True))
    finally:
        folder.chmod(0o755)
    assert str(folder / "state.db") in line


def test_history_without_a_database_says_so_in_one_line_and_creates_nothing(tmp_path):
    (tmp_path / "postwatch.toml").write_text('database = "state.db"\n', encoding="utf-8")
    for args in READING_COMMANDS:
        line = one_line(postwatch(tmp_path, *args))
        assert line == f"postwatch: no database at {tmp_path / 'state.db'} yet; run `postwatch check` first"
    assert [p.name for p in tmp_path.iterdir()] == ["postwatch.toml"]


def test_a_database_at_an_older_schema_revision_is_one_line_saying_how_to_upgrade(tmp_path):
    from state import Store

    (tmp_path / "postwatch.toml").write_text('database = "state.db"\n', encoding="utf-8")
    old = Store(str(tmp_path / "state.db"), migrate=False)
    old.migrate("0001")
    old.close()
    before = snapshot(tmp_path)
    line = one_line(postwatch(tmp_path, "status"))
    assert "schema revision 0001" in line and "to upgrade it" in line and str(tmp_path / "state.db") in line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", [("status",), ("check",), ("history",), ("subscribers", "add", "x@example.org"),
                                     ("run",)])
def test_postgresql_unreachable_is_one_line_naming_the_database_without_its_password(tmp_path, command):
    (tmp_path / "postwatch.toml").write_text('database = "postgresql://postwatch:hunter2@127.0.0.1:1/postwatch"\n',
                                             encoding="utf-8")
    line = one_line(postwatch(tmp_path, *command))
    assert line.startswith("postwatch: database postgresql://postwatch:***@127.0.0.1:1/postwatch: ")
    assert "refused" in line.lower()
    assert "hunter2" not in line


def test_daemon_jobs_log_one_line_per_storage_failure_and_run_on_when_the_database_returns(tmp_path, site, pg_database):
    port = free_port()
    cli = Cli(write_config(tmp_path, site.blog_url, None, listen_port=port, database=f"{PG_SERVER}/{pg_database}",
                           interval="2s"))
    process = cli.popen("run")
    try:
        wait_for(lambda: _checks(port) >= 1, timeout=60, what="the first check")
        # 1. The database refuses every connection for a while (shorter than the lease's patience).
        sql("postgres", f'ALTER DATABASE "{pg_database}" ALLOW_CONNECTIONS false')
        kill_backends(pg_database)
        time.sleep(8)
        sql("postgres", f'ALTER DATABASE "{pg_database}" ALLOW_CONNECTIONS true')
        assert process.poll() is None
        # 2. The jobs' tables fail while APScheduler's own table works, so the jobs do run and fail.
        sql(pg_database, "ALTER TABLE sources RENAME TO sources_away")
        time.sleep(5)
        sql(pg_database, "ALTER TABLE sources_away RENAME TO sources")
        assert process.poll() is None
        after_outage = _checks(port)
        try:
            wait_for(lambda: _checks(port) > after_outage, timeout=30, what="a check after the outage")
        except AssertionError as exc:
            process.kill()
            raise AssertionError(f"{exc}; the daemon said:\n{process.communicate()[1]}") from None
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        sql("postgres", f'ALTER DATABASE "{pg_database}" ALLOW_CONNECTIONS true')
    stderr = process.communicate()[1]
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", line) for line in lines), stderr   # one line each
    job_failures = [line for line in lines if 'relation "sources" does not exist' in line]
    assert job_failures, stderr
    for line in job_failures:
        assert re.search(rf"ERROR +\S+: database postgresql://postgres@127\.0\.0\.1:5432/{pg_database}: ", line), line


def _checks(port: int) -> float:
    try:
        return checks_done(port)
    except OSError:
        return 0.0
