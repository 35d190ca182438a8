"""The unsubscribe secret beside the database: made atomically once, never silently empty."""
from __future__ import annotations

import multiprocessing
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

from postwatch.config import Config

STARTS = 400
ROUNDS = 4      # the race of the old code hit about one start in 400, not every time


def _first_start(database: str, start_at: float, results) -> None:
    os.environ.pop("POSTWATCH_SECRET", None)
    config = Config(database=database)
    time.sleep(max(0.0, start_at - time.time()))
    try:
        results.put(config.unsubscribe_secret().decode())
    except Exception as exc:
        results.put(f"ERROR {type(exc).__name__}: {exc}")


def test_400_first_starts_at_once_all_get_the_same_non_empty_secret(tmp_path):
    fork = multiprocessing.get_context("fork")
    for round_no in range(ROUNDS):
        folder = tmp_path / f"round{round_no}"
        folder.mkdir()
        results = fork.Queue()
        start_at = time.time() + 1.5        # every process is forked and waiting by then
        processes = [fork.Process(target=_first_start, args=(str(folder / "state.db"), start_at, results))
                     for _ in range(STARTS)]
        for process in processes:
            process.start()
        keys = [results.get(timeout=60) for _ in processes]
        for process in processes:
            process.join()
        errors = [key for key in keys if key.startswith("ERROR")]
        assert not errors, f"round {round_no}: {len(errors)} of {STARTS} failed, e.g. {errors[0]}"
        assert "" not in keys, f"round {round_no}: {keys.count('')} of {STARTS} got an empty secret"
        assert len(set(keys)) == 1, f"round {round_no}: {len(set(keys))} different secrets"
        assert len(keys[0]) >= 32
        assert (folder / "state.db.secret").read_text().strip() == keys[0]
        assert [p.name for p in folder.iterdir()] == ["state.db.secret"]     # no temporary file left


def _cli(folder: Path, *args: str, limit_file_size: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "POSTWATCH_SECRET"}

    def no_room_for_data():     # every write of file data fails, like a full disk (EFBIG instead of ENOSPC)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))

    return subprocess.run([sys.executable, "-m", "postwatch", "--config", str(folder / "postwatch.toml"), *args],
                          capture_output=True, text=True, timeout=120, env=env, cwd=folder,
                          preexec_fn=no_room_for_data if limit_file_size else None)


def _folder_with_database(tmp_path: Path) -> Path:
    from state import Store

    (tmp_path / "postwatch.toml").write_text('database = "state.db"\n', encoding="utf-8")
    Store(str(tmp_path / "state.db")).close()
    return tmp_path


def test_a_secret_that_cannot_be_written_leaves_no_file_and_the_next_start_makes_a_good_one(tmp_path):
    def no_room_for_data():     # every write of file data fails, like a full disk (EFBIG instead of ENOSPC)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))

    ask = ("from postwatch.config import Config\n"
           f"config = Config(database={str(tmp_path / 'state.db')!r})\n"
           "try:\n"
           "    print('KEY', config.unsubscribe_secret().decode())\n"
           "except Exception as exc:\n"
           "    print('ERROR', type(exc).__name__, str(exc).replace(chr(10), ' | '))\n")
    env = {k: v for k, v in os.environ.items() if k != "POSTWATCH_SECRET"}
    failed = subprocess.run([sys.executable, "-c", ask], capture_output=True, text=True, timeout=60, env=env,
                            preexec_fn=no_room_for_data)
    assert failed.stdout.startswith("ERROR ConfigError "), failed.stdout + failed.stderr
    assert str(tmp_path / "state.db.secret") in failed.stdout and " | " not in failed.stdout
    assert "or set $POSTWATCH_SECRET" in failed.stdout, failed.stdout     # the remedy names the variable
    assert list(tmp_path.iterdir()) == []       # neither the secret nor a temporary file

    done = subprocess.run([sys.executable, "-c", ask], capture_output=True, text=True, timeout=60, env=env)
    key = done.stdout.removeprefix("KEY ").strip()
    assert done.stdout.startswith("KEY ") and len(key) >= 32, done.stdout + done.stderr
    assert (tmp_path / "state.db.secret").read_text() == key


def test_an_empty_or_short_secret_file_is_one_error_line_naming_the_file_and_the_remedy(tmp_path):
    folder = _folder_with_database(tmp_path)
    for content in (b"", b"abc\n"):
        (folder / "state.db.secret").write_bytes(content)
        result = _cli(folder, "digest", "preview", "preview.html")
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert str(folder / "state.db.secret") in lines[0] and "delete the file" in lines[0]
        assert (folder / "state.db.secret").read_bytes() == content     # left for the operator to decide
