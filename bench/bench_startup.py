"""Start-up figures: wall time and peak RSS of `postwatch --help`, `postwatch status` (database
at head) and a one-shot `postwatch check` of one unchanged source, each run as a user runs it (a
fresh interpreter per command). The replica is served by a separate process on 127.0.0.2, so the
figures measure postwatch, not the replica. Goals (issue 15): --help and status <= 0.15 s;
one-shot check <= 0.4 s wall, <= 60 MB peak RSS.

    .venv/bin/python bench/bench_startup.py [--runs 7]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))     # support: the test helpers kept out of the wheel

from support.harness import ENVIRONMENT, write_config  # noqa: E402

REPLICA_HOST = "127.0.0.2"
GOALS = {"--help": (0.15, None), "status": (0.15, None), "check (unchanged source)": (0.4, 60.0)}


def measured(command: list[str], cwd: Path, env: dict) -> tuple[float, float, float, subprocess.CompletedProcess]:
    """(wall seconds, CPU seconds, peak RSS in MB, result) of one run of `command`, the child's own rusage."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)     # reaped here, not by Popen: its rusage is ours
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(command, process.returncode, out.read().decode(), err.read().decode())
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, result


def serve_replica() -> tuple[subprocess.Popen, str]:
    """The LiNK replica in its own process on REPLICA_HOST; (process, blog URL)."""
    code = ("import sys, threading\n"
            "from postwatch.testing.replica import BlogReplica\n"
            f"site = BlogReplica(host={REPLICA_HOST!r}).start()\n"
            "print(site.blog_url, flush=True)\n"
            "threading.Event().wait()\n")
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    return process, process.stdout.readline().strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="runs of each command (the median is printed)")
    args = parser.parse_args()
    replica, blog_url = serve_replica()
    try:
        with tempfile.TemporaryDirectory() as folder:
            folder = Path(folder)
            config = write_config(folder, blog_url, None)
            # HOME points into the temporary folder: nothing a run writes under ~ outlives the bench.
            env = {**os.environ, **ENVIRONMENT, "HOME": str(folder),
                   "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
            base = [sys.executable, "-m", "postwatch", "--config", str(config)]
            # The first check makes the database (at head) and takes the baseline; later ones see 304.
            _, _, _, first = measured([*base, "check"], folder, env)
            if first.returncode != 0:
                print(first.stdout, first.stderr, file=sys.stderr)
                return 1
            commands = {"--help": [*base, "--help"], "status": [*base, "status"],
                        "check (unchanged source)": [*base, "check"]}
            print(f"start-up, {args.runs} runs each, median (min-max); replica on {REPLICA_HOST} in its own process:")
            for label, command in commands.items():
                runs = []
                for _ in range(args.runs):
                    seconds, cpu, rss, result = measured(command, folder, env)
                    if result.returncode != 0:
                        print(f"{label} exited {result.returncode}:\n{result.stdout}{result.stderr}", file=sys.stderr)
                        return 1
                    runs.append((seconds, cpu, rss))
                walls, cpus, peaks = ([run[i] for run in runs] for i in range(3))
                wall_goal, rss_goal = GOALS[label]
                verdict = "met" if statistics.median(walls) <= wall_goal and (
                    rss_goal is None or statistics.median(peaks) <= rss_goal) else "MISSED"
                goal = f"goal <= {wall_goal} s" + (f", <= {rss_goal:.0f} MB" if rss_goal else "")
                print(f"  postwatch {label:<26} {statistics.median(walls):.3f} s ({min(walls):.3f}-{max(walls):.3f}) wall, "
                      f"{statistics.median(cpus):.3f} s CPU, {statistics.median(peaks):.1f} MB peak RSS   [{goal}: {verdict}]")
            last = result.stdout.strip().splitlines()
            print(f"  (last check said: {last[-1] if last else result.stderr.strip()})")
    finally:
        replica.terminate()
        replica.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
