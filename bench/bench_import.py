"""CSV import figure: `postwatch subscribers import` of 20,000 rows into SQLite, run as a user
runs it (a subprocess, so interpreter start, config, migrations and validation all count).

    .venv/bin/python bench/bench_import.py [--rows 20000]
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CADENCES = ["daily", "weekly", "immediate"]
ZONES = ["UTC", "Europe/London", "Asia/Seoul", "America/New_York"]
DOMAINS = ["example.org", "mail.example.net", "gmail.com", "libertyinnorthkorea.org", "bücher.example"]


def write_csv(path: Path, rows: int) -> None:
    lines = ["email,cadence,at,tz,day"]
    for n in range(rows):
        cadence = CADENCES[n % 3]
        lines.append(f"reader{n}@{DOMAINS[n % len(DOMAINS)]},{cadence},{n % 24:02d}:{n % 60:02d},{ZONES[n % 4]},"
                     f"{'fri' if cadence == 'weekly' else ''}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "POSTWATCH_SECRET": "bench"}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "postwatch.toml").write_text('database = "state.db"\n', encoding="utf-8")
        write_csv(folder / "people.csv", args.rows)
        command = [sys.executable, "-m", "postwatch", "--config", "postwatch.toml", "subscribers"]
        # The database exists and is migrated first, as it would be on a running installation.
        subprocess.run([*command, "list"], cwd=folder, env=env, check=True, capture_output=True)
        figures = []
        for label, extra in (("first import", []), ("the same file again (all duplicates)", [])):
            cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            done = subprocess.run([*command, "import", "people.csv", *extra], cwd=folder, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - started
            cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
            if done.returncode != 0:
                print(done.stdout, done.stderr, file=sys.stderr)
                return 1
            figures.append(f"{label}: {seconds:.2f} s wall, {cpu:.2f} s CPU ({done.stdout.strip()})")
        started = time.perf_counter()
        subprocess.run([*command, "list"], cwd=folder, env=env, check=True, capture_output=True)
        baseline = time.perf_counter() - started
    print(f"subscribers import, {args.rows:,} rows, SQLite, whole command:")
    for line in figures:
        print(f"  {line}")
    print(f"  for scale, `subscribers list` of the same database: {baseline:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
