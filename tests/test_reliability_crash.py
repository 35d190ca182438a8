"""Crash trials: a short run in every test run; the full 50 with `pytest -m slow` (or
python bench/reliability.py, which prints the figures)."""
from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))


@pytest.mark.parametrize("trials", [6, pytest.param(50, marks=[pytest.mark.slow, pytest.mark.timeout(900)])])
def test_sigkill_at_random_points_loses_nothing_and_sends_nothing_twice(tmp_path, trials):
    from reliability import run_trials

    seed = random.SystemRandom().randrange(1, 10**6)
    print(f"crash trial seed {seed}")
    figures = run_trials(trials, seed, tmp_path)
    assert figures["killed"] >= 1, figures
    assert figures["duplicates"] == 0, figures
    assert figures["losses"] == 0, figures
    assert figures["lost_posts"] == 0, figures
    assert figures["integrity"] == "ok"
    assert figures["deliveries"] == figures["expected_deliveries"]
