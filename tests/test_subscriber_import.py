"""`postwatch subscribers import FILE` through the real CLI: every row checked before anything is
stored, all or nothing (or --skip-invalid), counts that tell new from updated from duplicate
from refused, and an address that unsubscribed is never subscribed again by an import."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest


class Postwatch:
    def __init__(self, folder: Path):
        self.folder = folder
        (folder / "postwatch.toml").write_text('database = "state.db"\n', encoding="utf-8")

    def __call__(self, *args: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != "POSTWATCH_CONFIG"}
        env["POSTWATCH_SECRET"] = "test-secret"
        return subprocess.run([sys.executable, "-m", "postwatch", "--config", "postwatch.toml", *args],
                              capture_output=True, text=True, cwd=self.folder, env=env, timeout=120)

    def csv(self, name: str, text: str | bytes) -> str:
        path = self.folder / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        return name

    def stored(self) -> dict[str, tuple[str, str]]:
        """address -> (status, cadence), straight from the database."""
        if not (self.folder / "state.db").exists():
            return {}
        with sqlite3.connect(self.folder / "state.db") as db:
            return {email: (status, cadence) for email, status, cadence in
                    db.execute("SELECT email, status, cadence FROM subscribers")}


@pytest.fixture
def pw(tmp_path) -> Postwatch:
    tool = Postwatch(tmp_path)
    from state import Store

    Store(str(tmp_path / "state.db")).close()                # the database exists, as on a real installation
    return tool


def error_lines(result) -> list[str]:
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()


def test_a_cadence_postwatch_does_not_have_is_refused_and_nothing_is_stored(pw):
    name = pw.csv("people.csv", "email,cadence\nada@example.org,daily\nbo@example.org,hourly\ncy@example.org,weekly\n")
    result = pw("subscribers", "import", name)
    assert result.returncode == 1
    lines = error_lines(result)
    assert lines[0] == "postwatch: people.csv:3: cadence 'hourly' must be one of immediate, daily, weekly"
    assert "nothing imported" in lines[-1] and "--skip-invalid" in lines[-1] and len(lines) == 2
    assert pw.stored() == {}

    skipping = pw("subscribers", "import", name, "--skip-invalid")
    assert "people.csv:3: cadence 'hourly'" in skipping.stderr
    assert "2 new, 0 updated, 0 duplicates, 1 refused" in skipping.stdout
    assert pw.stored() == {"ada@example.org": ("active", "daily"), "cy@example.org": ("active", "weekly")}


def test_invalid_utf8_is_one_line_and_nothing_is_stored(pw):
    name = pw.csv("latin1.csv", "email\nada@example.org\nbo@example.org\nJos\xe9 <jose@example.org>\n".encode("latin-1"))
    result = pw("subscribers", "import", name)
    assert result.returncode == 2
    assert error_lines(result) == ["postwatch: latin1.csv:4: not UTF-8 text (byte 0xe9); save the file as UTF-8; "
                                   "nothing imported"]
    assert pw.stored() == {}


def test_a_200_kib_field_is_one_line_and_nothing_is_stored(pw):
    name = pw.csv("big.csv", "email,sources\nada@example.org,\nbo@example.org," + "x" * 200 * 1024 + "\ncy@example.org,\n")
    result = pw("subscribers", "import", name)
    assert result.returncode == 2
    [line] = error_lines(result)
    assert line.startswith("postwatch: big.csv:3: a field is longer than 128 KiB") and "nothing imported" in line
    assert pw.stored() == {}


def test_a_missing_file_is_one_line(pw):
    result = pw("subscribers", "import", "nowhere.csv")
    assert result.returncode == 2
    assert error_lines(result) == ["postwatch: nowhere.csv: no such file; nothing imported"]


def test_duplicates_are_counted_as_duplicates_and_changes_as_updates(pw):
    pw("subscribers", "add", "ada@example.org", "--cadence", "daily")
    pw("subscribers", "add", "bo@example.org", "--cadence", "daily")
    name = pw.csv("people.csv", "email,cadence\n"
                                "ada@example.org,daily\n"        # already subscribed, same settings
                                "BO@example.org,weekly\n"        # already subscribed, now weekly
                                "cy@example.org,immediate\n"     # new
                                "cy@example.org,immediate\n"     # twice in the file
                                "dee@example.org,\n")            # new, default cadence
    result = pw("subscribers", "import", name)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported people.csv: 2 new, 1 updated, 2 duplicates, 0 refused"
    assert pw.stored() == {"ada@example.org": ("active", "daily"), "bo@example.org": ("active", "weekly"),
                           "cy@example.org": ("active", "immediate"), "dee@example.org": ("active", "daily")}
    again = pw("subscribers", "import", name)
    assert again.stdout.strip() == "imported people.csv: 0 new, 0 updated, 5 duplicates, 0 refused"


def test_an_address_listed_twice_with_different_settings_is_refused(pw):
    name = pw.csv("people.csv", "ada@example.org,daily\nbo@example.org,daily\nada@example.org,weekly\n")
    result = pw("subscribers", "import", name)
    assert result.returncode == 1
    assert error_lines(result)[0] == "postwatch: people.csv:3: ada@example.org is also on line 1 with other settings"
    assert pw.stored() == {}


def test_an_unsubscribed_address_is_not_subscribed_again_by_an_import(pw):
    pw("subscribers", "add", "ada@example.org")
    with sqlite3.connect(pw.folder / "state.db") as db:          # as the unsubscribe link leaves it
        db.execute("UPDATE subscribers SET status = 'unsubscribed' WHERE email = 'ada@example.org'")
    name = pw.csv("people.csv", "email\nbo@example.org\nada@example.org\n")
    result = pw("subscribers", "import", name)
    assert result.returncode == 1
    lines = error_lines(result)
    assert lines[0] == "postwatch: people.csv:3: unsubscribed; not re-subscribed without their consent"
    assert pw.stored() == {"ada@example.org": ("unsubscribed", "daily")}

    skipping = pw("subscribers", "import", name, "--skip-invalid")
    assert "1 new, 0 updated, 0 duplicates, 1 refused" in skipping.stdout
    assert pw.stored() == {"ada@example.org": ("unsubscribed", "daily"), "bo@example.org": ("active", "daily")}


def test_rows_without_a_header_and_every_column(pw):
    name = pw.csv("people.csv", "ada@example.org,weekly,07:30,Europe/London,fri,\n"
                                "bo@example.org,daily,25:00,,,\n"
                                "cy@example.org,daily,08:00,Mars/Olympus,,\n"
                                "dee@example.org,daily,08:00,UTC,,nosuchblog\n"
                                "not-an-address,,,,,\n"
                                "eve@example.org,daily,08:00,UTC,,,,,,surplus\n")
    result = pw("subscribers", "import", name)
    lines = error_lines(result)
    assert [line.split(":")[2] for line in lines[:-1]] == ["2", "3", "4", "5", "6"]
    assert "time '25:00'" in lines[0] and "Mars/Olympus" in lines[1] and "nosuchblog" in lines[2]
    assert "not a valid email address" in lines[3] and "more cells than columns" in lines[4]
    assert pw.stored() == {}
    listed = pw("subscribers", "import", name, "--skip-invalid")
    assert "1 new" in listed.stdout
    assert "weekly, fri 07:30 Europe/London" in pw("subscribers", "list").stdout


# -- the Store method on both databases -------------------------------------------------------


def entry(email: str, cadence: str = "daily") -> dict:
    return {"email": email, "cadence": cadence, "send_time": "08:00", "timezone": "UTC", "sources": None}


def test_store_import_is_all_or_nothing_and_never_resubscribes(store):  # noqa: F811
    from digest.tokens import make_token, verify_token

    ada = store.add_subscriber("ada@example.org")
    store.unsubscribe(ada.id)
    store.add_subscriber("cy@example.org")
    entries = [entry("Ada@example.org"), entry("bo@example.org"), entry("cy@example.org", "weekly")]

    refused = store.import_subscribers(entries)
    assert (refused.added, refused.updated, refused.committed) == (1, 1, False)
    assert refused.refused == {0: "unsubscribed; not re-subscribed without their consent"}
    assert store.get_subscriber("bo@example.org") is None and store.get_subscriber("cy@example.org").cadence == "daily"

    done = store.import_subscribers(entries, skip_refused=True)
    assert done.committed and (done.added, done.updated) == (1, 1)
    assert store.get_subscriber("ada@example.org").status == "unsubscribed"
    assert store.get_subscriber("cy@example.org").cadence == "weekly"
    assert store.import_subscribers(entries[1:]).unchanged == 2

    # The subscription start survives the database's round trip, so tokens verify on both.
    bo = store.get_subscriber("bo@example.org")
    token = make_token(bo, b"k")
    assert verify_token(token, b"k", store.get_subscriber) == bo.id
    store.unsubscribe(bo.id)
    store.add_subscriber("bo@example.org", resubscribe=True)
    assert verify_token(token, b"k", store.get_subscriber) is None
    assert verify_token(make_token(store.get_subscriber(bo.id), b"k"), b"k", store.get_subscriber) == bo.id
