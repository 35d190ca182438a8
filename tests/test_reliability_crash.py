"""A short run of the crash trials (the full 50-trial run: python bench/reliability.py)."""
from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))


def test_sigkill_at_random_points_loses_nothing_and_sends_nothing_twice(tmp_path):
    from reliability import run_trials

    seed = random.SystemRandom().randrange(1, 10**6)
    print(f"crash trial seed {seed}")
    figures = run_trials(6, seed, tmp_path)
    assert figures["killed"] >= 1, figures
    assert figures["duplicates"] == 0, figures
    assert figures["losses"] == 0, figures
    assert figures["lost_posts"] == 0, figures
    assert figures["integrity"] == "ok"
    assert figures["deliveries"] == figures["expected_deliveries"]
